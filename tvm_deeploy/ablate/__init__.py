"""`tvm-deeploy ablate`: a grid of builds × compilers × memory sizes, run in parallel, cached, tabled, plotted.

    rows = tvm_deeploy.ablate.run_grid("grid.toml", "out", jobs=2)   # or scheduler="tcp://host:8786"
"""

from __future__ import annotations

from pathlib import Path

from .execute import SchedulerError, run_points
from .grid import GridError, Point, load_grid
from .outputs import write_outputs

__all__ = ["GridError", "Point", "SchedulerError", "load_grid", "run_grid", "run_points"]


def run_grid(grid_file, out_dir, jobs: int | None = None, scheduler: str | None = None, out=print) -> list[dict]:
    """Run (or read from the cache) every point of the grid file; write results.csv, results.json,
    summary.md and plots/*.png (without matplotlib: the plots are skipped with a message) under `out_dir`."""
    points = load_grid(grid_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_points(points, out_dir, jobs, scheduler, out)
    write_outputs(rows, out_dir)
    try:
        from .plots import make_plots

        plots = make_plots(rows, out_dir / "plots")
    except ImportError:
        out("plots skipped: matplotlib is not installed (pip install 'tvm-deeploy[plots]')")
    else:
        out(f"{len(plots)} plots in {out_dir / 'plots'}")
    out(f"wrote {out_dir / 'results.csv'}, results.json, summary.md")
    return rows
