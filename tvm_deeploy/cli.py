"""The `tvm-deeploy` command line.

    tvm-deeploy demo [--prompt TEXT] [--tokens N] [--no-qemu]
    tvm-deeploy compile MODEL.onnx -o OUT [--platform P] [--l1 BYTES] [--l2 BYTES] [--no-npu] [--no-offload]
                        [--inputs INPUTS.npz] [--outputs OUTPUTS.npz]
    tvm-deeploy run OUT --on host [--sanitize]
    tvm-deeploy run OUT --on qemu [--harts N] [--json] [--timeout S]
    tvm-deeploy ablate GRID.toml -o DIR [--jobs N] [--scheduler ADDRESS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2, like every other refusal (`--help` still shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="tvm-deeploy", description="Deploy small transformer models on "
                                     "RISC-V MCUs from Apache TVM.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="compile the shipped language model for deeploy and generate text "
                                            "with the standalone C program (host, and qemu when installed)")
    demo.add_argument("--prompt", default=None, help="the text to continue")
    demo.add_argument("--tokens", type=int, default=None, metavar="N", help="tokens to generate")
    demo.add_argument("--no-qemu", action="store_true", help="skip the RV32 run under qemu")

    compile_ = commands.add_parser("compile", help="ONNX model -> standalone C project (static memory plan)")
    compile_.add_argument("model", help="the ONNX model file")
    compile_.add_argument("-o", "--output", required=True, help="the project folder to write")
    compile_.add_argument("--platform", default="siracusa", help="target platform (default: siracusa)")
    compile_.add_argument("--l1", type=int, metavar="BYTES", help="L1 size override")
    compile_.add_argument("--l2", type=int, metavar="BYTES", help="L2 size override")
    compile_.add_argument("--no-npu", action="store_true", help="do not use the platform's NPU")
    compile_.add_argument("--no-offload", action="store_true",
                          help="every op through TVM's glue: the 'TVM alone' baseline")
    compile_.add_argument("--prefix", default="net", help="C name prefix (default: net)")
    compile_.add_argument("--io-in-arena", action="store_true", help="place inputs and outputs in the arena")
    compile_.add_argument("--seed", type=int, default=0, help="seed of the random test inputs")
    compile_.add_argument("--inputs", metavar="NPZ", help="test inputs (numpy .npz, one array per model input, "
                                                          "in input order; empty arrays skipped, extra ones "
                                                          "ignored) instead of random ones")
    compile_.add_argument("--outputs", metavar="NPZ", help="golden outputs (numpy .npz, one array per model output) "
                                                           "the test driver compares with (integers exactly, "
                                                           "floats within 1e-4); needs --inputs")

    run = commands.add_parser("run", help="build a compiled project and run its test driver")
    run.add_argument("project", help="the folder `tvm-deeploy compile` wrote")
    run.add_argument("--on", choices=["host", "qemu"], default="host",
                     help="where to run: this host (gcc), or RV32 under qemu with instruction counts")
    run.add_argument("--sanitize", action="store_true", help="build with AddressSanitizer and UBSan (host)")
    run.add_argument("--harts", type=int, metavar="N", help="qemu: harts to run on (default: the platform's cores)")
    run.add_argument("--json", action="store_true", help="qemu: print the counts as JSON")
    run.add_argument("--timeout", type=float, default=600.0, metavar="S", help="qemu: seconds before it is killed")

    ablate = commands.add_parser("ablate", help="run a grid of builds, compilers and memory sizes (cached); "
                                                "write results.csv, results.json, summary.md and plots")
    ablate.add_argument("grid", help="the grid file (TOML, a [grid] table of axes)")
    ablate.add_argument("-o", "--output", required=True, help="the folder for the cache and the results")
    ablate.add_argument("--jobs", type=int, metavar="N", help="points run at once (default: the core count)")
    ablate.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler (tcp://host:port) to run on")
    return parser


def _fail(command: str, message: str) -> int:
    print(f"tvm-deeploy {command}: error: {message}", file=sys.stderr)
    return 2


def _compile(args, out=print) -> int:
    import tvm_deeploy
    from tvm_deeploy.frontend import deeploy_dialect
    from tvm_deeploy.frontend.onnx_import import ModelWarning
    from tvm_deeploy.program.export import export_c
    from tvm_deeploy.program.lower import ExportError

    unusable = _unusable_output(Path(args.output))
    if unusable:
        return _fail("compile", f"-o {args.output}: {unusable}")
    if args.outputs is not None and args.inputs is None:
        return _fail("compile", "--outputs needs --inputs (the golden outputs are those of given inputs)")
    try:
        target = tvm_deeploy.target(args.platform, l1_bytes=args.l1, l2_bytes=args.l2,
                                    npu=False if args.no_npu else None)
        samples = None if args.inputs is None else _read_arrays("--inputs", args.inputs, "test inputs")
        golden = None if args.outputs is None else _read_arrays("--outputs", args.outputs, "golden outputs")
        # Deeploy types inputs from the test data: for its dialect, and for its integer tests (integer goldens)
        integer_test = golden is not None and all(deeploy_dialect.sample_dtype(a) != "float32" for a in golden)
        typing = samples if samples is not None and (integer_test or deeploy_dialect.uses_dialect(args.model)) \
            else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ModelWarning)
            mod = tvm_deeploy.load_onnx(args.model, inputs=typing)
        for warning in caught:
            print(f"tvm-deeploy compile: warning: {warning.message}", file=sys.stderr)
        inputs = None
        if samples is not None:
            inputs, extra = deeploy_dialect.harness_inputs(mod, samples)
            if extra:
                print(f"tvm-deeploy compile: warning: --inputs {args.inputs}: {extra} array(s) past the model's "
                      f"{len(inputs)} input(s) ignored", file=sys.stderr)
        exported = export_c(mod, target, args.output, prefix=args.prefix, offload=not args.no_offload,
                            io_in_arena=args.io_in_arena, seed=args.seed, inputs=inputs, expected_outputs=golden,
                            description=f"{Path(args.model).name} for {args.platform}")
    except (tvm_deeploy.ModelError, ExportError, ValueError) as err:
        return _fail("compile", str(err))
    except OSError as err:  # e.g. a read-only file system under the output folder
        return _fail("compile", f"cannot write {err.filename or args.output}: {err.strerror or err}")
    except RuntimeError as err:  # TVM's own errors (InternalError, C compilation) and CodegenError
        return _fail("compile", f"TVM could not build the model: {type(err).__name__}: {_one_line(err)}")
    report = exported.report
    counts = report["counts"]
    out(f"{args.model} -> {args.output}: {counts['steps']} steps, {counts['deeploy']} offloaded to deeploy "
        f"({counts['deeploy_functions']} distinct functions), "
        f"{counts['tvm']} through TVM's glue")
    for level, memory in report["memory"].items():
        if memory.get("owner") == "tiler":
            out(f"  {level} tiles {memory['arena_bytes']} bytes at most, capacity {memory['capacity_bytes']}")
            continue
        if memory.get("owner") == "npu":
            out(f"  {level} memory of the NPU: {memory['arena_bytes']} bytes of packed weights, "
                f"capacity {memory['capacity_bytes']}")
            continue
        out(f"  {level} arena {memory['arena_bytes']} bytes (lower bound {memory['lower_bound_bytes']}, "
            f"TVM StaticPlanBlockMemory {memory['tvm_static_plan_block_memory_bytes']}), "
            f"capacity {memory['capacity_bytes']}")
    out(f"  weights {report['weights']['bytes']} bytes in section {report['weights']['section']}")
    out(f"  run it: tvm-deeploy run {args.output} --on host (or --on qemu: RV32, instruction counts)")
    return 0


def _one_line(err: Exception, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_arrays(option: str, path: str, what: str) -> list:
    """The arrays of an .npz file in their stored order (np.savez: arr_0, arr_1, ... or the names given)."""
    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:  # missing, not a NumPy file, or object arrays
        raise ValueError(f"{option} {path}: cannot read {what} ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a bad input file: a ValueError like the others
        raise ValueError(f"{option} {path}: not an .npz archive (np.savez writes one)")  # noqa: TRY004
    with archive:
        return [archive[name] for name in archive.files]


def _unusable_output(output: Path) -> str | None:
    """Why the project cannot be written to `output`, found before any work; None if it can."""
    if output.exists() and not output.is_dir():
        return "exists and is not a folder"
    existing = output
    while not existing.exists():  # the nearest existing ancestor is where folders get created
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def _damaged(project: Path) -> str | None:
    """Why `project` is not a usable folder written by `tvm-deeploy compile`; None if it is."""
    report_path = project / "report.json"
    if not report_path.is_file():
        return f"{project} is not a project written by `tvm-deeploy compile` (no report.json)"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{report_path} is damaged ({err}); compile the project again"
    expected = {"prefix": str, "files": list, "ops": list, "target": dict}
    if not isinstance(report, dict) or any(not isinstance(report.get(key), kind) for key, kind in expected.items()):
        return f"{report_path} is damaged (it needs {', '.join(expected)}); compile the project again"
    missing = [name for name in report["files"] if not (project / str(name)).is_file()]
    if missing:
        return f"{project} is damaged: {len(missing)} file(s) missing ({', '.join(map(str, missing[:3]))}" \
               f"{', ...' if len(missing) > 3 else ''}); compile the project again"
    return None


def _run(args) -> int:
    if args.harts is not None and args.harts < 1:
        return _fail("run", f"--harts must be at least 1, got {args.harts}")
    project = Path(args.project)
    damaged = _damaged(project)
    if damaged:
        return _fail("run", damaged)
    if args.on == "qemu":
        return _run_qemu(project, args)
    prefix = json.loads((project / "report.json").read_text())["prefix"]
    target = "host-asan" if args.sanitize else "host"
    built = subprocess.run(["make", "-s", "-C", str(project), target])
    if built.returncode != 0:
        return _fail("run", f"building {project} failed (make {target})")
    program = project / "build" / target / f"{prefix}_test"
    return subprocess.run([str(program.resolve())]).returncode


def _run_qemu(project: Path, args) -> int:
    from .targets.qemu import QemuError, format_run, run_project

    try:
        run = run_project(project, args.harts, args.timeout)
    except QemuError as err:
        return _fail("run", str(err))
    print(json.dumps(run.to_json(), indent=2) if args.json else format_run(run))
    return run.exit_code


def _ablate(args) -> int:
    from .ablate import GridError, SchedulerError, run_grid

    if args.jobs is not None and args.jobs < 1:
        return _fail("ablate", f"--jobs must be at least 1, got {args.jobs}")
    try:
        rows = run_grid(args.grid, args.output, args.jobs, args.scheduler,
                        out=lambda line: print(line, flush=True))  # progress shows through a pipe too
    except (GridError, SchedulerError) as err:
        return _fail("ablate", str(err))
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import PROMPT, TOKENS, run_demo
        from .program.lower import ExportError

        tokens = TOKENS if args.tokens is None else args.tokens
        if tokens < 1:
            return _fail("demo", f"--tokens must be at least 1, got {tokens}")
        try:
            return run_demo(prompt=PROMPT if args.prompt is None else args.prompt, n_tokens=tokens,
                            qemu=not args.no_qemu)
        except (ValueError, ExportError) as err:  # e.g. a prompt and token count beyond the context
            return _fail("demo", str(err))
    if args.command == "compile":
        return _compile(args)
    if args.command == "ablate":
        return _ablate(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
