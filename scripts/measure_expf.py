"""The largest relative error of the kernels' exp (c_kernels/dpl_math.h's dpl_expf, through its bit-exact NumPy
form `reference.expf`) against exp in float64, over the float32 inputs whose e**x is a normal float32
(every `--stride`-th bit pattern; 1: all of them, a few minutes). Prints it and writes build/measure_expf.json.

    python scripts/measure_expf.py [--stride 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tvm_deeploy.offload import reference

F32 = np.float32
CHUNK = 1 << 24


def sweep(stride: int) -> dict:
    tiny, huge = np.finfo(F32).tiny, np.finfo(F32).max
    worst, worst_x, count = 0.0, 0.0, 0
    for sign, bound in ((F32(1.0), F32(89.0)), (F32(-1.0), F32(104.0))):
        last = int(np.array([bound], F32).view(np.uint32)[0])
        for start in range(0, last + 1, CHUNK):
            x = np.arange(start, min(start + CHUNK, last + 1), stride, dtype=np.uint32).view(F32) * sign
            exact = np.exp(x.astype(np.float64))
            normal = (exact >= tiny) & (exact <= huge)
            rel = np.where(normal, np.abs(reference.expf(x).astype(np.float64) - exact) / exact, 0.0)
            i = int(np.argmax(rel))
            count += int(normal.sum())
            if rel[i] > worst:
                worst, worst_x = float(rel[i]), float(x[i])
    return {"stride": stride, "inputs": count, "max_relative_error": worst, "at": worst_x,
            "ulps_of_2^-23": worst / 2.0**-23}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1, help="every n-th float32 bit pattern (default: all)")
    result = sweep(parser.parse_args().stride)
    print(f"dpl_expf: max relative error {result['max_relative_error']:.3e} "
          f"({result['ulps_of_2^-23']:.2f} x 2^-23) at x = {result['at']!r} over {result['inputs']:,} inputs")
    out = Path("build") / "measure_expf.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
