"""Wall-clock seconds per named stage (:class:`StageTimer`) and the process's peak memory
(:func:`peak_rss_mb`): what preparing, training and scoring a run report."""

from __future__ import annotations

import resource
import sys
import time

__all__ = ["StageTimer", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux the high-water mark of this process's own memory (``VmHWM`` in
    ``/proc/self/status``): ``getrusage``'s ``ru_maxrss`` survives ``fork`` + ``exec``, so a
    notebook kernel started by a test run that had grown to 6 GB would report 6 GB. Elsewhere
    ``ru_maxrss`` (kB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


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
