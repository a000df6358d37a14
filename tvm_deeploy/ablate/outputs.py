"""results.csv, results.json and summary.md from the points' rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .grid import AXES

LEADING = (*AXES, "status", "reason", "errors", "instructions", "kernel_instructions", "glue_instructions",
           "speedup_over_tvm")
# the axes TVM alone does not depend on: its baseline is shared across them
BASELINE_FREE = ("build", "cores", "tiler", "lanes")


def cost(row: dict) -> float | None:
    """What a point is compared by: instructions on the slowest hart under qemu, seconds on host."""
    return row.get("instructions") if row["run"] == "qemu" else row.get("host_seconds")


def _baseline_key(row: dict) -> tuple:
    return tuple(row[axis] for axis in AXES if axis not in BASELINE_FREE)


def add_speedups(rows: list[dict]) -> None:
    """Each ok row's speedup over TVM alone (the cheapest ok `tvm` point with the same other settings)."""
    baselines = {}
    for row in rows:
        if row["build"] == "tvm" and row["status"] == "ok":
            key = _baseline_key(row)
            baselines[key] = min(cost(row), baselines.get(key, cost(row)))
    for row in rows:
        baseline = baselines.get(_baseline_key(row))
        ok = row["status"] == "ok" and baseline and cost(row)
        row["speedup_over_tvm"] = round(baseline / cost(row), 3) if ok else None


def columns(rows: list[dict]) -> list[str]:
    names = list(LEADING)
    for row in rows:
        names += [name for name in row if name not in names]
    return names


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)


def varying_axes(rows: list[dict]) -> list[str]:
    """The axes (other than the model) that take more than one value in the rows."""
    return [axis for axis in AXES if axis != "model" and len({row[axis] for row in rows}) > 1]


def _number(value) -> str:
    if value is None or value == "":
        return ""
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def summary(rows: list[dict]) -> str:
    """A table per model: the varying axes, the cost split kernel/glue, the speedup over TVM alone, memory."""
    lines = ["# Ablation", "", f"{len(rows)} points: " + ", ".join(
        f"{sum(r['status'] == s for r in rows)} {s}" for s in ("ok", "failed", "skipped")), ""]
    axes = varying_axes(rows)
    measures = ("instructions", "kernel_instructions", "glue_instructions", "prompt_instructions",
                "decode_instructions_per_token", "host_seconds", "speedup_over_tvm",
                "l1_arena_bytes", "l2_arena_bytes", "weight_bytes", "text_bytes")
    shown = [m for m in measures if any(row.get(m) not in (None, "") for row in rows)]
    for model in dict.fromkeys(row["model"] for row in rows):
        lines += [f"## {Path(model).name}", "", "| " + " | ".join([*axes, *shown, "status"]) + " |",
                  "|" + "---|" * (len(axes) + len(shown) + 1)]
        for row in (r for r in rows if r["model"] == model):
            status = row["status"] + (f": {row['reason']}" if row.get("reason") else "")
            cells = [str(row[a]) for a in axes] + [_number(row.get(m)) for m in shown] + [status]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out_dir: Path) -> None:
    add_speedups(rows)
    write_csv(rows, out_dir / "results.csv")
    (out_dir / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out_dir / "summary.md").write_text(summary(rows))
