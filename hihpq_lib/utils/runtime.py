"""Run-time settings shared by the library, the notebooks, the CLI and the tests.

Everything a notebook or script would otherwise hard-code lives here: fast mode,
seeding, and the folders for data, caches and runs (each overridable by an
environment variable).

Environment variables
---------------------
``HIHPQ_FAST``
    ``1`` switches on fast mode: smaller data, fewer epochs (used by CI).
``HIHPQ_DATA_DIR``
    Where downloads and extracted datasets live (default ``<project>/data``).
``HIHPQ_CACHE_DIR``
    Where cached features live (default ``<data dir>/cache``).
``HIHPQ_RUNS_DIR``
    Where training runs, checkpoints and figures go (default ``<project>/runs``).
``HIHPQ_RESULTS_DIR``
    Where the benchmark tables are read from (default ``<project>/benchmarks/results``).

``<project>`` is :func:`project_dir`: ``HIHPQ_PROJECT_DIR`` if set, else the hihpq checkout
the working directory is in, else the working directory itself -- never the folder the
package is installed in.
``HIHPQ_THREADS``
    The number of threads every compute library may use (torch, ONNX Runtime, numba,
    faiss, BLAS); default: the cores free when a stage starts (see :func:`thread_budget`).
    A config's ``threads`` key, when not 0, wins over it.
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "project_dir",
    "fast_mode",
    "pick",
    "seed_everything",
    "data_dir",
    "cache_dir",
    "runs_dir",
    "results_dir",
    "thread_budget",
    "free_cores",
    "cpu_description",
    "use_threads",
    "in_notebook",
    "progress_bar",
]


def fast_mode() -> bool:
    """Whether fast mode is on (``HIHPQ_FAST`` set to ``1``, ``true`` or ``yes``).

    >>> from unittest import mock
    >>> with mock.patch.dict("os.environ", {"HIHPQ_FAST": "1"}):
    ...     fast_mode()
    True
    >>> with mock.patch.dict("os.environ", {"HIHPQ_FAST": "0"}):
    ...     fast_mode()
    False
    """
    return os.environ.get("HIHPQ_FAST", "0").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """Return ``fast`` in fast mode and ``full`` otherwise.

    The single switch notebooks use to shrink data and epochs, e.g.
    ``epochs = pick(30, 2)``.
    """
    return fast if fast_mode() else full


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 (seeds code that uses the legacy global RNG)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    path = Path(value).expanduser() if value else default
    return path


def project_dir() -> Path:
    """The folder the default ``data/``, ``runs/`` and ``benchmarks/results/`` live in.

    ``HIHPQ_PROJECT_DIR`` if set; else the nearest folder, from the working directory
    upwards, whose ``pyproject.toml`` is hihpq's (a checkout: ``make``, the notebooks in
    ``notebooks/`` and the scripts share one ``data/`` and ``runs/``); otherwise the working
    directory. Never the package's own location, which is ``site-packages`` for an
    installed library.
    """
    if os.environ.get("HIHPQ_PROJECT_DIR"):
        return Path(os.environ["HIHPQ_PROJECT_DIR"]).expanduser()
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        try:
            text = (folder / "pyproject.toml").read_text()
        except OSError:
            continue
        if re.search(r'^name\s*=\s*"hihpq"', text, re.M):
            return folder
    return cwd


def data_dir() -> Path:
    """Folder for downloads and extracted datasets (``HIHPQ_DATA_DIR``, default
    ``<project>/data``, see :func:`project_dir`)."""
    return _env_path("HIHPQ_DATA_DIR", project_dir() / "data")


def cache_dir() -> Path:
    """Folder for cached features (``HIHPQ_CACHE_DIR``, default ``<data dir>/cache``)."""
    return _env_path("HIHPQ_CACHE_DIR", data_dir() / "cache")


def runs_dir() -> Path:
    """Folder for runs, checkpoints and figures (``HIHPQ_RUNS_DIR``, default
    ``<project>/runs``)."""
    return _env_path("HIHPQ_RUNS_DIR", project_dir() / "runs")


def results_dir() -> Path:
    """Folder of the benchmark tables (``HIHPQ_RESULTS_DIR``, default
    ``<project>/benchmarks/results``, where ``make bench`` writes them)."""
    return _env_path("HIHPQ_RESULTS_DIR", project_dir() / "benchmarks" / "results")


# --------------------------------------------------------------------------------------
# One thread budget for torch, ONNX Runtime, numba, faiss and BLAS
# --------------------------------------------------------------------------------------


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; None where it is unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    vals = [float(v) for v in fields[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def _own_cpu_ticks() -> float:
    """CPU time of this process (all threads) in ``/proc/stat`` units; 0 where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return float(fields[11]) + float(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_description(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    r"""The processor's model name, architecture and a short hash of its feature flags.

    Two machines whose descriptions differ may sum floats in another order (another SIMD
    width in oneDNN, MKL or OpenBLAS), so the same seed can train down another path: the
    benchmarks record this beside their numbers. Where ``cpuinfo`` is missing (not Linux)
    the model comes from :func:`platform.processor`.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> def info(name, flags):
    ...     f = d / name
    ...     _ = f.write_text(f"model name\t: AMD EPYC\nflags\t\t: {flags}\n")
    ...     return cpu_description(f)
    >>> a = info("a", "fpu sse2 avx2")
    >>> a.startswith("AMD EPYC (")
    True
    >>> info("b", "avx2 fpu sse2") == a  # the order of the flags does not matter
    True
    >>> info("c", "fpu sse2 avx2 avx512f") == a  # another SIMD width: another description
    False
    """
    import hashlib
    import platform

    model, flags = "", ""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = " ".join(sorted(value.split()))
    model = model or platform.processor() or "unknown CPU"
    digest = hashlib.sha1(flags.encode()).hexdigest()[:8] if flags else "no flags"
    return f"{model} ({platform.machine()}, flags {digest})"


def free_cores(sample_s: float = 0.25) -> int:
    """Cores not busy with other work, measured over ``sample_s`` seconds (at least 1).

    Reads ``/proc/stat`` twice while this process sleeps; the busy share of all CPUs,
    times the number of CPUs, minus this process's own CPU time (threads of an earlier
    stage still winding down), is what others use. Where ``/proc/stat`` is missing (not
    Linux) every available core counts as free.
    """
    n = _available_cpus()
    first, own = _cpu_times(), _own_cpu_ticks()
    if first is None:
        return n
    import time

    time.sleep(sample_s)
    second, own = _cpu_times(), _own_cpu_ticks() - own
    if second is None or second[1] <= first[1]:
        return n
    n_all = os.cpu_count() or n
    # (busy ticks of others) / (ticks of one CPU over the interval)
    busy = (second[0] - first[0] - own) / ((second[1] - first[1]) / n_all)
    # a core counts as taken once another process keeps it more than a third busy
    return int(min(n, max(1, n - math.floor(busy + 2 / 3))))


def thread_budget(requested: int | None = 0) -> int:
    """The number of threads a stage may use.

    ``requested`` (a config's ``threads``) when positive; else ``HIHPQ_THREADS``; else
    :func:`free_cores`: on a machine where a notebook kernel or another run keeps a core
    busy, the stage runs on the cores left instead of fighting over them (threads that
    share a core with another busy process make every parallel step wait for the slowest
    one).

    >>> thread_budget(3)
    3
    """
    if requested is not None and int(requested) > 0:
        return int(requested)
    env = os.environ.get("HIHPQ_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(
                f"HIHPQ_THREADS={env!r} is not a whole number; set it to e.g. 2, or unset it"
            ) from None
        if value < 1:
            raise ValueError(f"HIHPQ_THREADS must be >= 1, got {value}; or unset it")
        return value
    return _claim_free_cores()


#: A claim counts for this long: enough to cover a stage that has just started and does
#: not show in ``/proc/stat`` yet; after that the measurement sees the work itself.
_CLAIM_TTL_S = 20.0


def _claims_dir() -> Path:
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"hihpq-threads-{uid}"


def _claim_free_cores() -> int:
    """:func:`free_cores`, minus the threads other hihpq processes claimed moments ago.

    Two copies started together would otherwise both measure an idle machine and both
    take every core. Each process measures under a file lock and leaves a claim (its
    thread count, for :data:`_CLAIM_TTL_S` seconds), so the second one counts the first.
    Without a writable temporary folder (or ``fcntl``), this is plain :func:`free_cores`.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return free_cores()
    folder = _claims_dir()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        lock = open(folder / "lock", "a")  # noqa: SIM115 (closed below)
    except OSError:
        return free_cores()
    import time

    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        n = free_cores()
        now, claimed = time.time(), 0
        for claim in folder.glob("pid-*"):
            try:
                pid = int(claim.name[4:])
                if pid == os.getpid():
                    continue
                if now - claim.stat().st_mtime > _CLAIM_TTL_S:
                    claim.unlink()
                    continue
                os.kill(pid, 0)
                claimed += int(claim.read_text() or 0)
            except ProcessLookupError:
                claim.unlink(missing_ok=True)
            except (ValueError, OSError):
                continue
        n = max(1, min(n, _available_cpus() - claimed))
        try:
            (folder / f"pid-{os.getpid()}").write_text(str(n))
        except OSError:
            pass
    return n


def use_threads(n: int) -> int:
    """Give every compute library the same budget of ``n`` threads; return ``n``.

    numba's OpenMP pool, when it starts, sets the OpenMP thread count of the whole process
    (torch shares the same OpenMP runtime) to numba's own default, all cores. So the pool
    is started here first, and torch's count is set after it: otherwise the first search
    or validation in a run silently switched torch from 1 thread to all cores (a run with
    ``threads: 1`` then differed bit for bit from its resumed copy). ONNX Runtime sessions
    read :func:`torch.get_num_threads` when they are created.
    """
    n = max(1, int(n))
    try:
        import numba

        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # numba (the ``fast`` extra) is not installed
        pass
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # BLAS and OpenMP of numpy, scipy, scikit-learn, faiss
    except ImportError:  # pragma: no cover
        pass
    torch.set_num_threads(n)  # threadpoolctl may have touched the shared OpenMP runtime
    return n


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto would draw a widget)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable=None, **kwargs):
    """A tqdm progress bar that stays readable in a saved notebook.

    In a terminal it is ``tqdm.auto.tqdm``. In a Jupyter kernel it is plain-text tqdm on
    stdout, redrawn at most every 10 s: a widget would be saved in the executed
    notebook frozen at its first state ("0/39"), while text ends at its final line.
    Keyword arguments go to tqdm (``total``, ``desc``, ``unit``, ``disable``, ...).
    """
    from hihpq_lib.utils.optional import require

    if in_notebook():
        tqdm = require("tqdm.std", "data").tqdm

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
        return tqdm(iterable, **kwargs)
    return require("tqdm.auto", "data").tqdm(iterable, **kwargs)
