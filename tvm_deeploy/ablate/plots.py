"""PNG plots of an ablation (matplotlib, the optional extra [plots]): one bar per configuration.

instructions.png (kernel and glue stacked), speedup.png (over TVM alone), memory.png (bytes per level),
code_size.png (.text), gcc_vs_clang.png (each configuration compiled by both).
"""

from __future__ import annotations

from pathlib import Path

from .outputs import varying_axes

MEMORY = (("l1_arena_bytes", "L1 (tiles)"), ("l2_arena_bytes", "L2 arena"), ("state_arena_bytes", "state"),
          ("weight_bytes", "weights"))


def _label(row: dict, axes: list[str], several_models: bool) -> str:
    parts = [Path(row["model"]).stem] if several_models else []
    return " ".join(parts + [str(row[axis]) for axis in axes])


def _bars(rows, axes, several_models, series, title, ylabel, path, stacked=False):
    import matplotlib.pyplot as plt

    labels = [_label(row, axes, several_models) for row in rows]
    figure, plot = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) + 2), 4.5))
    width = 0.8 if stacked else 0.8 / len(series)
    bottom = [0.0] * len(rows)
    for i, (name, values) in enumerate(series):
        values = [value or 0 for value in values]
        offsets = range(len(rows)) if stacked else [x + (i - (len(series) - 1) / 2) * width for x in range(len(rows))]
        plot.bar(offsets, values, width, bottom=bottom if stacked else None, label=name)
        if stacked:
            bottom = [b + v for b, v in zip(bottom, values)]
    plot.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    plot.set_title(title)
    plot.set_ylabel(ylabel)
    if len(series) > 1:
        plot.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _compiler_pairs(rows: list[dict], axes: list[str]):
    """(configuration without the compiler, gcc row, clang row) for every configuration built by both."""
    by_config = {}
    for row in rows:
        config = tuple(row[axis] for axis in ("model", *axes) if axis != "compiler")
        by_config.setdefault(config, {})[row["compiler"]] = row
    return [(both["gcc"], both["clang"]) for both in by_config.values() if {"gcc", "clang"} <= set(both)]


def make_plots(rows: list[dict], plots_dir: Path) -> list[Path]:
    """Write the plots of the ok points; the files written. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    axes = varying_axes(ok)
    several = len({row["model"] for row in ok}) > 1
    qemu = [row for row in ok if row["run"] == "qemu"]
    written = []
    if qemu:
        written.append(_bars(qemu, axes, several, [("kernel", [r["kernel_instructions"] for r in qemu]),
                                                   ("glue", [r["glue_instructions"] for r in qemu])],
                             "Instructions on the slowest hart", "instructions", plots_dir / "instructions.png",
                             stacked=True))
        written.append(_bars(qemu, axes, several, [(".text", [r["text_bytes"] for r in qemu])],
                             "Code size (RV32 ELF)", "bytes", plots_dir / "code_size.png"))
    faster = [row for row in ok if row.get("speedup_over_tvm") is not None]
    if faster:
        written.append(_bars(faster, axes, several, [("speedup", [r["speedup_over_tvm"] for r in faster])],
                             "Speedup over TVM alone", "×", plots_dir / "speedup.png"))
    levels = [(name, [r.get(key) for r in ok]) for key, name in MEMORY if any(r.get(key) for r in ok)]
    written.append(_bars(ok, axes, several, levels, "Memory per level", "bytes", plots_dir / "memory.png"))
    pairs = _compiler_pairs(qemu, axes)
    if pairs:
        pair_axes = [axis for axis in axes if axis != "compiler"]
        written.append(_bars([gcc for gcc, _ in pairs], pair_axes, several,
                             [("gcc", [gcc["instructions"] for gcc, _ in pairs]),
                              ("clang", [clang["instructions"] for _, clang in pairs])],
                             "gcc against clang", "instructions", plots_dir / "gcc_vs_clang.png"))
    return written
