"""Contention: the quick demo alone, beside a busy loop, and two copies side by side.

The classroom case of issue 14: a notebook kernel computing while the demo runs. Runs
``hihpq demo --quick`` (CIFAR-10 subset, features and bank computed from a cold feature
cache, training, encode + search) in three settings and prints the seconds of each stage
and the ratio to the run alone:

* ``alone``: one copy on an otherwise idle machine;
* ``busy``: one copy beside a single-threaded busy loop (``python -c 'while True: pass'``);
* ``pair``: two copies started together (each row: the slower copy).

Each run gets a fresh feature cache (the decoded CIFAR-10 images and the ONNX export are
hard-linked in from a warm-up run, so "features" is the backbone's forward pass only).
Run it under the machine's CPU lock, nothing else heavy beside it::

    /work/heavy.sh python -m benchmarks.contention --out /tmp/contention
    python -m benchmarks.contention --lib /path/to/other/checkout   # another version's code
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("load images", "features", "augmentation bank", "train", "encode + search + mAP")


def _env(lib: Path, cache: Path, data_dir: Path, threads: str | None) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(lib),
        HIHPQ_CACHE_DIR=str(cache),
        HIHPQ_DATA_DIR=str(data_dir),
        MPLBACKEND="Agg",
    )
    env.pop("HIHPQ_FAST", None)
    if threads:
        env["HIHPQ_THREADS"] = threads
    else:
        env.pop("HIHPQ_THREADS", None)
    return env


def _fresh_cache(warm: Path, target: Path) -> Path:
    """A cache folder holding only the decoded images and the ONNX exports of ``warm``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for f in warm.glob("cifar10-*"):
        os.link(f, target / f.name)
    if (warm / "onnx").is_dir():
        (target / "onnx").mkdir()
        for f in (warm / "onnx").iterdir():
            os.link(f, target / "onnx" / f.name)
    return target


def _start(args, tag: str, env: dict) -> tuple[subprocess.Popen, Path]:
    out = args.out / tag
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "hihpq_lib.app.cli", "demo", "--quick", "--out", str(out)]
    log = open(args.out / f"{tag}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, out


def _stages(out: Path) -> dict:
    summary = json.loads((out / "demo.json").read_text())
    return {k: float(v) for k, v in summary["stage_seconds"].items()}


def _run(args, tag: str, n_copies: int = 1, busy: bool = False) -> list[dict]:
    procs = []
    loop = None
    if busy:
        loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        for i in range(n_copies):
            cache = _fresh_cache(args.warm_cache, args.out / f"cache-{tag}-{i}")
            env = _env(args.lib, cache, args.data_dir, args.threads)
            procs.append(_start(args, f"{tag}-{i}", env))
        results = []
        for proc, out in procs:
            t0 = time.perf_counter()
            if proc.wait() != 0:
                raise SystemExit(f"{out} failed; see {out}.log")
            results.append(_stages(out))
            del t0
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/hihpq-contention"))
    ap.add_argument("--lib", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--data-dir", type=Path, default=None, help="HIHPQ_DATA_DIR of the runs")
    ap.add_argument("--threads", default=None, help="HIHPQ_THREADS for every run (default unset)")
    ap.add_argument("--settings", nargs="+", default=["alone", "busy", "pair"])
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir or args.out / "data"
    args.warm_cache = args.out / "cache-warm"
    if not any(args.warm_cache.glob("cifar10-*")):
        print("warm-up run (decodes CIFAR-10 once, exports the ONNX model)...", flush=True)
        env = _env(args.lib, args.warm_cache, args.data_dir, args.threads)
        proc, _ = _start(args, "warm", env)
        if proc.wait() != 0:
            raise SystemExit(f"warm-up failed; see {args.out / 'warm.log'}")
    table = {}
    for setting in args.settings:
        t = time.perf_counter()
        if setting == "alone":
            runs = _run(args, "alone")
        elif setting == "busy":
            runs = _run(args, "busy", busy=True)
        elif setting == "pair":
            runs = _run(args, "pair", n_copies=2)
        else:
            raise SystemExit(f"unknown setting {setting!r}")
        table[setting] = runs
        print(f"{setting}: {time.perf_counter() - t:.0f} s wall", flush=True)
    (args.out / "contention.json").write_text(json.dumps(table, indent=1))
    alone = table.get("alone", [None])[0]
    print(
        f"\nlibrary: {args.lib}; HIHPQ_THREADS={args.threads or 'unset'}; cores: {os.cpu_count()}"
    )
    head = "| stage | alone (s) | " + " | ".join(
        f"{s} (s) | {s} / alone" for s in table if s != "alone"
    )
    print(head + " |")
    print("|---" * (1 + 1 + 2 * (len(table) - 1)) + "|")
    for stage in STAGES:
        if alone is None or stage not in alone:
            continue
        cells = [f"{alone[stage]:.1f}"]
        for s, runs in table.items():
            if s == "alone":
                continue
            worst = max(r[stage] for r in runs)
            cells += [
                " / ".join(f"{r[stage]:.1f}" for r in runs),
                f"{worst / max(alone[stage], 1e-9):.2f}x",
            ]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
