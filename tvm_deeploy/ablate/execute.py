"""Running the points: a cache under DIR, a local process pool or a Dask cluster, a progress line.

Each point lives in DIR/points/<key>/, the key a content hash of the model's bytes, the point's options
and the tool versions; its row is DIR/points/<key>/row.json once it finished (ok or skipped), so a rerun
reads it back and an interrupted run resumes. Failed points run again. On a Dask cluster the workers
write their projects under the same DIR and read the same model paths: give them a shared file system.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

from .. import __version__
from ..targets.qemu import QEMU
from ..targets.rv32 import CROSS_COMPILER
from .grid import LM_PREFIX, Point
from .point import run_point

CACHED_STATUSES = ("ok", "skipped")
SCHEDULER_TIMEOUT = "10s"  # connecting to a Dask scheduler
class SchedulerError(RuntimeError):
    """The Dask scheduler cannot be used (dask.distributed missing, or no scheduler at the address)."""


@functools.cache
def _tool_version(program: str) -> str:
    try:
        return subprocess.run([program, "--version"], check=False, capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return "missing"


def _model_bytes(model: str) -> bytes:
    if model.startswith(LM_PREFIX):
        from ..demo import CHECKPOINT, TOKENIZER

        return model.encode() + CHECKPOINT.read_bytes() + TOKENIZER.read_bytes()
    return Path(model).read_bytes()


def _tools(point: Point) -> list[str]:
    """The programs that build and run the point: the cross gcc links even what clang compiled."""
    if point.run == "host":
        return [point.compiler]
    return [CROSS_COMPILER, QEMU, *(["clang"] if point.compiler == "clang" else [])]


def point_key(point: Point) -> str:
    """The content hash naming the point's cache entry."""
    axes = {**point.axes(), "model": None}  # the model's bytes count, not its path
    versions = [__version__, *(_tool_version(tool) for tool in _tools(point))]
    digest = hashlib.sha256(_model_bytes(point.model))
    digest.update(json.dumps([axes, versions], sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _cached(row_file: Path) -> dict | None:
    try:
        row = json.loads(row_file.read_text())
    except (OSError, ValueError):
        return None
    return row if row.get("status") in CACHED_STATUSES else None


def _store(row_file: Path, row: dict) -> None:
    partial = row_file.with_suffix(".partial")  # a rename: an interrupted write leaves no half row
    partial.write_text(json.dumps(row, indent=1) + "\n")
    partial.replace(row_file)


class Progress:
    """Points done of total, failures, and the time left at the pace of the points run so far."""

    def __init__(self, total: int, out=print):
        self.total, self.done, self.failed, self.ran, self.out = total, 0, 0, 0, out
        self.start = time.perf_counter()

    def update(self, row: dict, cached: bool) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        self.ran += not cached
        remaining = self.total - self.done
        eta = (time.perf_counter() - self.start) / self.ran * remaining if self.ran else 0.0
        state = "cached" if cached else row["status"]
        reason = f" ({row['reason']})" if row.get("reason") else ""
        self.out(f"[{self.done}/{self.total}] {self.failed} failed, ETA {eta:.0f} s | {state}: "
                 f"{row['label']}{reason}")


def _in_pool(todo, jobs: int):
    """(key, row) as the points finish in a local pool of `jobs` processes."""
    # spawn: TVM's threads do not survive a fork
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_point, point, point_dir): key for key, point, point_dir in todo}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def _on_dask(todo, scheduler: str):
    """(key, row) as the points finish on the Dask cluster at `scheduler`."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SchedulerError("--scheduler needs dask.distributed: pip install 'tvm-deeploy[ablate]'") from None
    try:
        client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
    except OSError as err:
        raise SchedulerError(f"no Dask scheduler at {scheduler}: {err}") from None
    with client:
        futures = {client.submit(run_point, point, point_dir, pure=False): key for key, point, point_dir in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_points(points: list[Point], out_dir, jobs: int | None = None, scheduler: str | None = None,
               out=print) -> list[dict]:
    """Every point's row, in the points' order, each with "key" and "cached"; runs what the cache lacks."""
    points_dir = Path(out_dir) / "points"
    keys = [point_key(point) for point in points]
    unique = dict(zip(keys, points))  # a point listed twice runs once
    progress = Progress(len(unique), out)
    rows, todo = {}, []
    for key, point in unique.items():
        row = _cached(points_dir / key / "row.json")
        if row is None:
            todo.append((key, point, points_dir / key))
            continue
        rows[key] = {**row, "key": key, "label": point.label, "cached": True}
        progress.update(rows[key], cached=True)
    finished = _on_dask(todo, scheduler) if scheduler else _in_pool(todo, jobs or os.cpu_count() or 1)
    for key, row in finished if todo else ():
        if row["status"] in CACHED_STATUSES:
            _store(points_dir / key / "row.json", row)
        rows[key] = {**row, "key": key, "label": unique[key].label, "cached": False}
        progress.update(rows[key], cached=False)
    return [rows[key] for key in keys]
