"""RV32 benchmark of the bare-metal HAL's fork/join (c_kernels/hal/rv32.c): instructions per fork of an empty
task over all harts, under qemu -icount (gcc -O2, rv32imafc as the language-model builds).

    python scripts/bench_fork.py [--json build/bench_fork.json] [--harts 1 2 8]

Per build: the whole cluster's instructions per fork (qemu's clock under -icount advances with every hart's
instructions, so this includes the workers' wake-up and return to sleep, which no profile step counts),
hart 0's (the dpl_cluster_fork call, as a step's count includes it) and a worker's average share of the rest.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from tvm_deeploy.targets import qemu
from tvm_deeploy.targets.rv32 import WITH_FPU

SOURCE = Path(__file__).with_name("bench_fork.c")


def measure(harts: int, out_dir: Path) -> dict:
    elf = qemu.build_program([SOURCE], out_dir / f"bench_fork_{harts}.elf", harts=harts, isa=WITH_FPU,
                             flags=("-DDPL_PROFILE_STEPS=1",))
    code, output = qemu.run_elf(elf, harts, timeout=120)
    if code != 0:
        raise qemu.QemuError(f"bench_fork on {harts} harts exited with {code}:\n{output}")
    cluster = int(re.search(r"^cluster (\d+)$", output, re.MULTILINE).group(1))
    per_hart = [int(v) for v in re.findall(r"^hart \d+ (\d+)$", output, re.MULTILINE)]
    worker = (cluster - per_hart[0]) / (harts - 1) if harts > 1 else None
    return {"harts": harts, "isa": WITH_FPU.march, "cluster_per_fork": cluster, "hart0_per_fork": per_hart[0],
            "worker_per_fork": None if worker is None else round(worker, 1),
            "worker_in_task_per_fork": per_hart[1] if harts > 1 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="build/bench_fork.json", help="where to write the results")
    parser.add_argument("--harts", type=int, nargs="+", default=[1, 2, 8])
    args = parser.parse_args(argv)
    missing = qemu.missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/setup.sh", file=sys.stderr)
        return 2
    rows = []
    print(f"{'harts':>5} {'cluster/fork':>13} {'hart 0/fork':>12} {'worker/fork':>12} {'worker in task':>15}")
    with tempfile.TemporaryDirectory(prefix="bench-fork-") as tmp:
        for harts in args.harts:
            r = measure(harts, Path(tmp))
            rows.append(r)
            dash = "-"
            print(f"{harts:>5} {r['cluster_per_fork']:>13,} {r['hart0_per_fork']:>12,} "
                  f"{r['worker_per_fork'] if harts > 1 else dash:>12} "
                  f"{r['worker_in_task_per_fork'] if harts > 1 else dash:>15}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
