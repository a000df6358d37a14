"""Every network of Deeploy's test suite as a standalone C program on this host, against Deeploy's goldens.

For each `network.onnx` under the folder (default ../shared/deeploy-tests): `tvm-deeploy compile network.onnx
--inputs inputs.npz --outputs outputs.npz`, then `tvm-deeploy run` (make host); the test driver compares with
the golden outputs (integers exactly, fp32 within 1e-4 absolute). Prints a line per network and the total,
writes JSON, exits 1 when any network fails. (tests/test_deeploy_dialect.py runs every network in TVM's VM
and a representative few as C programs; this runs them all.)

    python scripts/check_deeploy_goldens.py [--root ../shared/deeploy-tests] [--json build/deeploy_goldens.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "shared" / "deeploy-tests"
ERRORS = re.compile(r"^Errors: (\d+) out of (\d+)$", re.MULTILINE)


def check(folder: Path, work: Path) -> dict:
    out = work / "out"
    compile_args = ["tvm-deeploy", "compile", str(folder / "network.onnx"), "-o", str(out),
                    "--inputs", str(folder / "inputs.npz"), "--outputs", str(folder / "outputs.npz")]
    compiled = subprocess.run(compile_args, capture_output=True, text=True)
    if compiled.returncode != 0:
        return {"status": "compile failed", "message": (compiled.stderr or compiled.stdout).strip()[-500:]}
    ran = subprocess.run(["tvm-deeploy", "run", str(out)], capture_output=True, text=True)
    found = ERRORS.search(ran.stdout)
    if found is None:
        return {"status": "run failed", "message": (ran.stderr or ran.stdout).strip()[-500:]}
    errors, checked = int(found.group(1)), int(found.group(2))
    ok = ran.returncode == 0 and errors == 0
    return {"status": "ok" if ok else "wrong", "errors": errors, "checked": checked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--json", type=Path, default=Path("build/deeploy_goldens.json"))
    args = parser.parse_args()
    networks = sorted(p.parent for p in args.root.glob("**/network.onnx"))
    if not networks:
        print(f"no network.onnx under {args.root}", file=sys.stderr)
        return 2
    results = {}
    for folder in networks:
        name = str(folder.relative_to(args.root))
        with tempfile.TemporaryDirectory(prefix="deeploy-goldens-") as work:
            results[name] = check(folder, Path(work))
        row = results[name]
        detail = f"Errors: {row['errors']} out of {row['checked']}" if "errors" in row else row["message"]
        print(f"{name}: {row['status']} ({detail})", flush=True)
    passed = sum(row["status"] == "ok" for row in results.values())
    print(f"{passed} of {len(results)} networks match Deeploy's outputs as C programs on this host")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
