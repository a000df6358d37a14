"""Build an exported project for RV32 (`make rv32`) and run it under qemu with exact instruction counts.

    run = run_project("out", harts=8)      # builds, runs, parses
    print(format_run(run)); run.errors, run.slowest_hart_instructions, run.to_json()

qemu runs the virt machine with `-icount shift=0`, so instruction counts are exact and repeatable: the
driver built with DPL_PROFILE prints, per step of the network, the instructions each hart ran (see
c_kernels/hal/rv32.c) and the DMA bytes it moved, then `Errors: E out of N`. The slowest hart's count is
the speed measure. A generator project's driver (tvm_deeploy.program.generate) also prints its tokens and the
counts of every call (prompt, then each decode call): `run.tokens`, `run.calls`. `run_host` builds
`make host` and parses the same output, without counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .resources import resource_dir
from .rv32 import CROSS_COMPILER, HAL_SOURCES, INTEGER, LINKER_SCRIPT, TOOLCHAIN_FLAGS, Isa

QEMU = "qemu-system-riscv32"
DEFAULT_TIMEOUT = 600.0
_PROFILE = re.compile(r"^Profile step (\d+): dma_to_l1 (\d+) dma_to_l2 (\d+) instructions((?: \d+)+)$", re.MULTILINE)
_CALL = re.compile(r"^Profile (prompt|decode (\d+)): dma_to_l1 (\d+) dma_to_l2 (\d+) instructions((?: \d+)+)$",
                   re.MULTILINE)
_TOKEN = re.compile(r"^Token (\d+): (-?\d+)$", re.MULTILINE)
_ERRORS = re.compile(r"^Errors: (\d+) out of (\d+)$", re.MULTILINE)


class QemuError(RuntimeError):
    """The RV32 build or the qemu run failed (the message says which, with the tool's output)."""


@dataclass(frozen=True)
class StepCount:
    step: int  # numbered from 1, as in report.json
    engine: str  # "cluster" (offloaded), "tvm" or "copy"
    op: str
    instructions: tuple[int, ...]  # per hart
    dma_to_l1: int
    dma_to_l2: int
    function: str = "main"  # the exported function the step belongs to

    @property
    def slowest(self) -> int:
        return max(self.instructions)


@dataclass(frozen=True)
class CallCount:
    """One call of a generator's driver: the prompt (call 0) or the decode call that generates token `call`."""

    function: str  # "prompt" or "decode"
    call: int
    instructions: tuple[int, ...]  # per hart
    dma_to_l1: int
    dma_to_l2: int

    @property
    def slowest(self) -> int:
        return max(self.instructions)


@dataclass(frozen=True)
class QemuRun:
    harts: int
    exit_code: int
    errors: int | None  # None when the driver did not get as far as printing them (or had nothing to check)
    checked: int | None
    steps: tuple[StepCount, ...]  # a generator's: summed over its calls
    output: str  # everything the program printed
    tokens: tuple[int, ...] = ()  # a generator's generated tokens
    calls: tuple[CallCount, ...] = ()  # a generator's calls, in order

    @property
    def decode_instructions_per_token(self) -> float | None:
        """The slowest hart's instructions per decode call, on average (None without decode calls)."""
        decodes = [c.slowest for c in self.calls if c.function == "decode"]
        return sum(decodes) / len(decodes) if decodes else None

    @property
    def per_hart_instructions(self) -> tuple[int, ...]:
        return tuple(sum(s.instructions[h] for s in self.steps) for h in range(self.harts))

    @property
    def slowest_hart_instructions(self) -> int:
        return max(self.per_hart_instructions, default=0)

    @property
    def dma_bytes(self) -> tuple[int, int]:
        return sum(s.dma_to_l1 for s in self.steps), sum(s.dma_to_l2 for s in self.steps)

    def to_json(self) -> dict:
        return {"harts": self.harts, "exit_code": self.exit_code, "errors": self.errors, "checked": self.checked,
                "instructions": {"slowest_hart": self.slowest_hart_instructions,
                                 "per_hart": list(self.per_hart_instructions)},
                "dma_bytes": {"to_l1": self.dma_bytes[0], "to_l2": self.dma_bytes[1]},
                "steps": [{"step": s.step, "function": s.function, "engine": s.engine, "op": s.op,
                           "instructions": list(s.instructions),
                           "slowest_hart": s.slowest, "dma_to_l1": s.dma_to_l1, "dma_to_l2": s.dma_to_l2}
                          for s in self.steps],
                "tokens": list(self.tokens),
                "calls": [{"function": c.function, "call": c.call, "instructions": list(c.instructions),
                           "slowest_hart": c.slowest, "dma_to_l1": c.dma_to_l1, "dma_to_l2": c.dma_to_l2}
                          for c in self.calls],
                "decode_instructions_per_token": self.decode_instructions_per_token,
                "output": self.output}


@dataclass(frozen=True)
class HostRun:
    """The test driver's run on this host (`make host`)."""

    exit_code: int
    errors: int | None
    checked: int | None
    tokens: tuple[int, ...]  # a generator's generated tokens
    output: str
    seconds: float  # the program's wall-clock time (the build excluded)

    def to_json(self) -> dict:
        return {"exit_code": self.exit_code, "errors": self.errors, "checked": self.checked,
                "tokens": list(self.tokens), "seconds": round(self.seconds, 4), "output": self.output}


def missing_tools() -> list[str]:
    """The programs `make rv32` and the qemu run need that are not on PATH (scripts/setup.sh installs them)."""
    return [tool for tool in ("make", CROSS_COMPILER, QEMU) if shutil.which(tool) is None]


def qemu_command(elf: Path, harts: int, icount: bool = True) -> list[str]:
    """qemu's virt machine, no firmware, the program's output on stdout through semihosting, one
    instruction per virtual nanosecond (-icount shift=0: exact, repeatable counts). Without `icount` the
    harts run at once, each on a host thread, and the counters follow the host's clock."""
    return [QEMU, "-machine", "virt", "-smp", str(harts), "-m", "128M", "-bios", "none", "-display", "none",
            "-serial", "none", "-monitor", "none", "-chardev", "stdio,id=s0",
            "-semihosting-config", "enable=on,target=native,chardev=s0", *(["-icount", "shift=0"] if icount else []),
            "-kernel", str(elf)]


def build_program(sources: list, elf: Path, harts: int = 1, isa: Isa = INTEGER, flags: tuple[str, ...] = ()) -> Path:
    """Compile a standalone C program (a kernel benchmark, a HAL check) for RV32 with the HAL of c_kernels/,
    as `make rv32` builds a project; `flags` adds defines or include folders."""
    kernels = resource_dir("c_kernels")
    elf = Path(elf)
    elf.parent.mkdir(parents=True, exist_ok=True)
    command = [CROSS_COMPILER, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-march={isa.march}",
               f"-mabi={isa.mabi}", *TOOLCHAIN_FLAGS, f"-DDPL_RV32_HARTS={harts}", f"-I{kernels}",
               f"-I{kernels / 'hal'}", *flags, *[str(s) for s in sources],
               *[str(kernels / name) for name in HAL_SOURCES], "-T", str(kernels / LINKER_SCRIPT),
               f"-Wl,--defsym=__dpl_harts={harts}", "-lm", "-o", str(elf)]
    compiled = subprocess.run(command, capture_output=True, text=True)
    if compiled.returncode != 0:
        raise QemuError(f"compiling {elf.name} failed:\n{compiled.stdout}{compiled.stderr}")
    return elf


def run_elf(elf: Path, harts: int, timeout: float = DEFAULT_TIMEOUT, icount: bool = True) -> tuple[int, str]:
    """Run an RV32 program under qemu, killed after `timeout` seconds; (exit code, output)."""
    try:
        ran = subprocess.run(qemu_command(elf, harts, icount), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QemuError(f"qemu did not finish {elf} within {timeout:g} s") from None
    return ran.returncode, ran.stdout + ran.stderr


def build(project: Path, harts: int, prefix: str, make_args: tuple[str, ...] = ()) -> Path:
    """`make rv32 HARTS=harts` in the project (`make_args` e.g. ("CC=clang", "OPT=-O3")); the ELF it wrote."""
    made = subprocess.run(["make", "-s", "-C", str(project), "rv32", f"HARTS={harts}", *make_args],
                          capture_output=True, text=True)
    if made.returncode != 0:
        raise QemuError(f"make rv32 failed in {project}:\n{made.stdout}{made.stderr}")
    return project / "build" / f"rv32-harts{harts}" / f"{prefix}_test.elf"


def _errors(output: str) -> tuple[int | None, int | None]:
    errors = _ERRORS.search(output)
    return (int(errors.group(1)), int(errors.group(2))) if errors else (None, None)


def _tokens(output: str) -> tuple[int, ...]:
    return tuple(int(m.group(2)) for m in _TOKEN.finditer(output))


def _calls(output: str) -> tuple[CallCount, ...]:
    return tuple(CallCount("prompt" if m.group(2) is None else "decode", int(m.group(2) or 0),
                           tuple(int(v) for v in m.group(5).split()), int(m.group(3)), int(m.group(4)))
                 for m in _CALL.finditer(output))


def parse(output: str, exit_code: int, harts: int, ops: list[dict]) -> QemuRun:
    """The driver's output -> counts per step (named after report.json's ops), the error count, and a
    generator's tokens and counts per call."""
    by_step = {op["step"]: op for op in ops}
    steps = []
    for match in _PROFILE.finditer(output):
        number = int(match.group(1))
        op = by_step.get(number, {})
        steps.append(StepCount(number, op.get("engine", "?"), str(op.get("op", "?")),
                               tuple(int(v) for v in match.group(4).split()), int(match.group(2)),
                               int(match.group(3)), op.get("function", "main")))
    return QemuRun(harts, exit_code, *_errors(output), tuple(steps), output, _tokens(output), _calls(output))


def run_project(project, harts: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                make_args: tuple[str, ...] = ()) -> QemuRun:
    """Build the exported project for RV32 with `harts` harts (default: the platform's cores) and run its
    test driver under qemu, killed after `timeout` seconds. Raises QemuError when a tool is missing, the
    build fails, or the run times out."""
    project = Path(project)
    report = json.loads((project / "report.json").read_text())
    missing = missing_tools()
    if missing:
        raise QemuError(f"missing {', '.join(missing)}: run scripts/setup.sh")
    harts = harts or report["target"]["cores"]
    # offloaded ops fork over their plan's cores, split glue over its "cores"
    forked = max((op["plan"]["cores"] if "plan" in op else op.get("cores", 1) for op in report["ops"]), default=1)
    if harts < forked:
        raise QemuError(f"the project forks over {forked} cores: run it on at least {forked} harts "
                        f"(or export it for fewer cores)")
    exit_code, output = run_elf(build(project, harts, report["prefix"], make_args), harts, timeout)
    return parse(output, exit_code, harts, report["ops"])


def run_host(project, sanitize: bool = False, timeout: float = DEFAULT_TIMEOUT,
             make_args: tuple[str, ...] = ()) -> HostRun:
    """`make host` (or host-asan) in the exported project and run its test driver, killed after `timeout`
    seconds; its error count and a generator's tokens. Raises QemuError when the build fails or the run
    times out."""
    project = Path(project)
    prefix = json.loads((project / "report.json").read_text())["prefix"]
    target = "host-asan" if sanitize else "host"
    made = subprocess.run(["make", "-s", "-C", str(project), target, *make_args], capture_output=True, text=True)
    if made.returncode != 0:
        raise QemuError(f"make {target} failed in {project}:\n{made.stdout}{made.stderr}")
    exit_code, output, seconds = run_timed((project / "build" / target / f"{prefix}_test").resolve(), timeout)
    return HostRun(exit_code, *_errors(output), _tokens(output), output, seconds)


def run_timed(program: Path, timeout: float) -> tuple[int, str, float]:
    """Run a program built for this host, killed after `timeout` seconds: (exit code, output, wall seconds)."""
    start = time.perf_counter()
    try:
        ran = subprocess.run([str(program)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QemuError(f"{program} did not finish within {timeout:g} s") from None
    return ran.returncode, ran.stdout + ran.stderr, time.perf_counter() - start


def _format_calls(run: QemuRun) -> list[str]:
    """A generator's tokens and its calls' counts, with the prompt's and the mean decode call's cost."""
    per_hart = run.harts > 1
    head = f"{'call':<10} {'slowest hart':>13}"
    head += "".join(f" {'hart ' + str(h):>11}" for h in range(run.harts)) if per_hart else ""
    lines = ["tokens: " + " ".join(str(t) for t in run.tokens), head + f" {'DMA to L1':>10} {'to L2':>9}"]
    for c in run.calls:
        name = "prompt" if c.function == "prompt" else f"decode {c.call}"
        line = f"{name:<10} {c.slowest:>13,}"
        line += "".join(f" {n:>11,}" for n in c.instructions) if per_hart else ""
        lines.append(line + f" {c.dma_to_l1:>10,} {c.dma_to_l2:>9,}")
    prompt = next((c for c in run.calls if c.function == "prompt"), None)
    summary = [f"prompt {prompt.slowest:,}"] if prompt else []
    if run.decode_instructions_per_token is not None:
        summary.append(f"decode {run.decode_instructions_per_token:,.0f} per token (mean)")
    lines.append("instructions on the slowest hart: " + ", ".join(summary))
    return lines


def format_run(run: QemuRun) -> str:
    """A table of instructions per step (slowest hart, and each hart when there are several), DMA bytes,
    totals and the error count; for a generator the steps summed over its calls, then its tokens and calls."""
    per_hart = run.harts > 1
    several = len({s.function for s in run.steps}) > 1
    head = f"{'step':>4}  {'engine':<7} {'slowest hart':>13}"
    head += "".join(f" {'hart ' + str(h):>11}" for h in range(run.harts)) if per_hart else ""
    head += f" {'DMA to L1':>10} {'to L2':>9}  op"
    lines = [f"RV32 under qemu, {run.harts} hart{'s' if run.harts > 1 else ''} (instructions, -icount exact)",
             head]
    for s in run.steps:
        line = f"{s.step:>4}  {s.engine:<7} {s.slowest:>13,}"
        line += "".join(f" {n:>11,}" for n in s.instructions) if per_hart else ""
        lines.append(line + f" {s.dma_to_l1:>10,} {s.dma_to_l2:>9,}  {s.function + ': ' if several else ''}{s.op}")
    total = f"{'':>4}  {'total':<7} {run.slowest_hart_instructions:>13,}"
    total += "".join(f" {n:>11,}" for n in run.per_hart_instructions) if per_hart else ""
    lines.append(total + f" {run.dma_bytes[0]:>10,} {run.dma_bytes[1]:>9,}")
    if run.calls:
        lines += _format_calls(run)
    if run.errors is None and run.tokens and run.exit_code == 0:
        lines.append(f"generated {len(run.tokens)} tokens (no expected tokens to compare with)")
    elif run.errors is None:
        lines.append(f"the program stopped before checking its outputs (exit code {run.exit_code}):")
        lines.append(run.output.rstrip())
    else:
        lines.append(f"Errors: {run.errors} out of {run.checked}")
    return "\n".join(lines)
