"""Wall-clock seconds per named stage (:class:`StageTimer`) and the process's peak memory
(:func:`peak_rss_mb`): what preparing, training and scoring a run report."""

from __future__ import annotations

import resource
import time

__all__ = ["StageTimer", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Collects wall-clock seconds per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.t

        return _Ctx()
