"""The benchmark (`digest bench`, `make bench`): each stage's throughput, time and peak memory.

Figures are printed, never asserted: speed targets live here, not in the test suite.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .db import Database
from .ingest import ingest_source
from .ingest.readers import read

log = logging.getLogger(__name__)

#: Real papers for the benchmark: ../shared/data/arxiv-daily beside the checkout, or this variable.
DATA = Path(os.environ.get("DIGEST_BENCH_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "arxiv-daily"))


@dataclass
class Stage:
    name: str
    items: int
    unit: str
    seconds: float
    peak_mb: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds else float("inf")


class PeakRSS:
    """The process's peak resident memory while a block runs, sampled every 5 ms.

    (tracemalloc would see only Python's allocations, not NumPy's or SQLite's, and slows the
    work it measures several times over.)
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self._page
        except OSError:  # not Linux: the lifetime peak is the best there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRSS":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def measure(name: str, unit: str, work: Callable[[], int], note: str = "") -> Stage:
    """Run `work` (which returns how many items it handled): its time and the peak memory meanwhile."""
    with PeakRSS() as memory:
        started = time.perf_counter()
        items = work()
        seconds = time.perf_counter() - started
    return Stage(name, items, unit, seconds, memory.peak / 2**20, note)


def daily_files(folder: Path = DATA) -> list[Path]:
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no daily listings in {folder} (set DIGEST_BENCH_DATA)")
    return files


def bench_ingest(files: list[Path], workdir: Path) -> Stage:
    """All the daily files into a fresh SQLite database: read, normalize, deduplicate, store."""
    db = Database(f"sqlite:///{workdir / 'ingest.db'}")
    entries = sum(len(read(f.read_bytes()).records) for f in files)

    def work() -> int:
        for f in files:
            result = ingest_source(db, str(f))
            if not result.ok:
                raise RuntimeError(f"{f}: {result.error}")
        return entries

    stage = measure("ingest", "papers", work, f"{len(files)} files of {files[0].parent}, into SQLite")
    db.dispose()
    return stage


def run(stages: list[str] | None = None) -> list[Stage]:
    files = daily_files()
    results = []
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as folder:
        if not stages or "ingest" in stages:
            results.append(bench_ingest(files, Path(folder)))
    return results


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def as_json(results: list[Stage]) -> str:
    return json.dumps({"stages": [asdict(s) | {"per_second": s.per_second} for s in results], "max_rss_mb": max_rss_mb()}, indent=2)
