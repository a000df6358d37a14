"""One point of the grid: compile, build, run, check, and measure.

`run_point` returns a flat dict (the point's axes plus its measures) and never raises: a point that
cannot run is "skipped" with its reason, one that breaks is "failed" with the error.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import traceback
from pathlib import Path

from .grid import KIB, LM_PREFIX, Point

PREFIX = "net"
GLUE_ENGINES = ("tvm", "copy")  # steps through TVM's glue; every other engine runs our kernels
LM_PROMPT_TOKENS = 16
LM_TOKENS = 4  # one from the prompt, three decode calls
RV32_SIZE = "riscv64-unknown-elf-size"


class Skip(Exception):
    """The point cannot run here (the message is the reason)."""


def _target(point: Point):
    import tvm_deeploy

    return tvm_deeploy.target(point.platform, l1_bytes=point.l1_kib * KIB, l2_bytes=point.l2_kib * KIB,
                              cores=point.cores, npu=point.build == "npu", tiler=point.tiler, planner=point.planner,
                              lanes=point.lanes)


def _language_model(name: str):
    """The decoder module, its prompt and the expected tokens' reference, as scripts/bench_slm.py runs it."""
    from ..demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
    from ..lm.checkpoint import MICRO_LLAMA, load_checkpoint, random_checkpoint
    from ..lm.llama import build_decoder
    from ..lm.llama_reference import LlamaReference, calibrate
    from ..lm.tokenizer import Tokenizer

    checkpoint = load_checkpoint(CHECKPOINT) if name == "stories260K" else random_checkpoint(MICRO_LLAMA, seed=0)
    calibration = Tokenizer.load(TOKENIZER).encode(CALIBRATION_TEXT, bos=True)
    prompt = calibration[:LM_PROMPT_TOKENS]
    quant = calibrate(checkpoint, calibration)
    return build_decoder(checkpoint, len(prompt), quant), prompt, LlamaReference(checkpoint, quant)


def _export(point: Point, out: Path):
    from ..frontend.onnx_import import load_onnx
    from ..program.export import export_c
    from ..program.generate import export_generator, generate_in_vm

    target = _target(point)
    offload = point.build != "tvm"
    if point.model.startswith(LM_PREFIX):
        mod, prompt, reference = _language_model(point.model[len(LM_PREFIX):])
        # TVM alone computes its quantize steps in float: its own VM build is its reference
        expected = reference.generate(prompt, LM_TOKENS) if offload else generate_in_vm(mod, prompt, LM_TOKENS)
        return export_generator(mod, target, out, prompt, LM_TOKENS, expected, offload=offload)
    return export_c(load_onnx(point.model), target, out, prefix=PREFIX, offload=offload)


def _solver_status(report: dict) -> str:
    statuses = {entry.get("status") for entry in report.get("solver", {}).values()}
    statuses |= {op["plan"]["solver_status"] for op in report["ops"] if "plan" in op}
    statuses.discard(None)
    return "/".join(sorted(statuses))


def _memory(report: dict) -> dict:
    measures = {f"{level.lower()}_arena_bytes": memory["arena_bytes"] for level, memory in report["memory"].items()}
    measures["weight_bytes"] = report["weights"]["bytes"]
    measures["npu_weight_bytes"] = report["weights"].get("npu_bytes", 0)
    return measures


def _text_bytes(elf: Path) -> int:
    sized = subprocess.run([RV32_SIZE, str(elf)], capture_output=True, text=True, check=True)
    return int(sized.stdout.splitlines()[1].split()[0])


def _qemu(point: Point, project: Path, prefix: str, make_args: tuple[str, ...]) -> dict:
    from ..targets.qemu import run_project

    run = run_project(project, point.cores, make_args=make_args)
    per_hart = run.per_hart_instructions
    slowest = max(range(run.harts), key=lambda h: per_hart[h])
    kernel = sum(s.instructions[slowest] for s in run.steps if s.engine not in GLUE_ENGINES)
    prompt = next((c.slowest for c in run.calls if c.function == "prompt"), None)
    decode = run.decode_instructions_per_token
    elf = project / "build" / f"rv32-harts{point.cores}" / f"{prefix}_test.elf"
    return {"exit_code": run.exit_code, "errors": run.errors, "checked": run.checked,
            "instructions": run.slowest_hart_instructions, "kernel_instructions": kernel,
            "glue_instructions": per_hart[slowest] - kernel, "dma_to_l1_bytes": run.dma_bytes[0],
            "dma_to_l2_bytes": run.dma_bytes[1], "prompt_instructions": prompt,
            "decode_instructions_per_token": None if decode is None else round(decode),
            "text_bytes": _text_bytes(elf)}


def _host(project: Path, make_args: tuple[str, ...]) -> dict:
    from ..targets.qemu import run_host

    run = run_host(project, make_args=make_args)
    return {"exit_code": run.exit_code, "errors": run.errors, "checked": run.checked,
            "host_seconds": round(run.seconds, 6)}


def measure(point: Point, point_dir: Path) -> dict:
    """Compile, build and run the point in `point_dir`; its measures. Raises Skip or any build error."""
    reason = point.skip_reason()
    if reason:
        raise Skip(reason)
    project = point_dir / "project"
    shutil.rmtree(project, ignore_errors=True)  # an interrupted earlier attempt
    start = time.perf_counter()
    exported = _export(point, project)
    measures = {"compile_seconds": round(time.perf_counter() - start, 3),
                "solver_status": _solver_status(exported.report), **_memory(exported.report)}
    make_args = (f"CC={point.compiler}", f"OPT={point.opt}")
    if point.run == "qemu":
        measures.update(_qemu(point, project, exported.report["prefix"], make_args))
    else:
        measures.update(_host(project, make_args))
    return measures


def run_point(point: Point, point_dir) -> dict:
    """The point's row: its axes, "status" (ok, failed, skipped), "reason", and its measures."""
    point_dir = Path(point_dir)
    point_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    row = point.axes()
    try:
        row.update(measure(point, point_dir))
    except Skip as skip:
        return {**row, "status": "skipped", "reason": str(skip)}
    except Exception as err:  # noqa: BLE001 - a broken point is a result, not the end of the grid
        (point_dir / "error.txt").write_text(traceback.format_exc())
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return {**row, "status": "failed", "reason": f"{type(err).__name__}: {first}",
                "wall_seconds": round(time.perf_counter() - start, 3)}
    ok = row["errors"] == 0 and row["exit_code"] == 0
    reason = "" if ok else f"Errors: {row['errors']} out of {row['checked']}, exit code {row['exit_code']}"
    row.update(status="ok" if ok else "failed", reason=reason, wall_seconds=round(time.perf_counter() - start, 3))
    return row
