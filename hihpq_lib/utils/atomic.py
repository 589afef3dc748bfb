"""Atomic file writes: a killed process never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder, flushes it to disk, and
renames it over the destination with :func:`os.replace` (atomic on POSIX and Windows).
The file gets the permissions a plain ``open(path, "w")`` would give (``0666`` minus the
umask), so a shared run or cache stays readable by the people it is shared with.

A process killed between the two steps leaves its temporary file
(``.<name>.<pid>-<random>.tmp``) behind; :func:`clean_stale_tmp` removes those whose
process is gone (or that are older than a day), and the run folder, the feature cache
and the image cache call it when they start.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "clean_stale_tmp",
    "check_writable",
    "file_mode",
]

_UMASK_LOCK = threading.Lock()
#: Temporary names: ``.<name>.<pid>-<hex>.tmp`` (now) and ``.<name>.<random>.tmp`` (before).
_TMP_RE = re.compile(r"^\..+\.(?:(?P<pid>\d+)-[0-9a-f]{8}|[A-Za-z0-9_]{8})\.tmp$")
_TMPDIR_RE = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` would create.

    >>> old = os.umask(0o022); oct(file_mode()); _ = os.umask(old)
    '0o644'
    """
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = atomic_write(p, lambda f: f.write(b"ok")); p.read_bytes()
    b'ok'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):  # mkstemp-style 0600 would hide shared runs and caches
                os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_stale_tmp(folder: str | os.PathLike, max_age_s: float = 86400.0) -> list[Path]:
    """Remove orphaned temporary files (and extraction folders) in ``folder``.

    A temporary file is stale when the process named in it no longer runs, or when it is
    older than ``max_age_s`` (a process id may have been reused, or it came from another
    machine). A live writer's file is never touched. Returns the removed paths.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".x.pt.999999999-0123abcd.tmp").write_bytes(b"half")
    >>> [p.name for p in clean_stale_tmp(d)]
    ['.x.pt.999999999-0123abcd.tmp']
    """
    import shutil

    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TMP_RE.match(entry.name) or _TMPDIR_RE.match(entry.name)
        if m is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = m.group("pid")
        stale = age > max_age_s or (pid is not None and not _pid_alive(int(pid)))
        if pid is None and age > 3600:  # the old naming carried no pid: an hour is stale
            stale = True
        if not stale:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def check_writable(folder: str | os.PathLike, what: str, fix: str) -> Path:
    """Create ``folder`` if needed and check that a file can be written in it.

    Raises ``PermissionError`` with one line naming the folder and ``fix`` (e.g. which
    environment variable points elsewhere) — before any expensive work.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(
            f"{what} {folder} is not writable ({exc.strerror or type(exc).__name__}); {fix}"
        ) from None
    return folder
