"""Should a CIFAR-10 cell take the reference's own settings for its code length? Validation decides.

Run: ``python -m benchmarks.reference_cells --cells II:16 II:64 [I:32 ...] [--seeds 3]
[--threads 2] [--epochs N] [--out DIR] [--only-reference | --no-reference] [--no-singles]
[--extra KEY=VALUE[,KEY=VALUE] ...] [--quick]``

The reference's scripts (``scripts/cifar10_<p>/<b>bits.sh`` of github.com/zexuanqiu/HiHPQ,
``configs/paper/paper_cifar10_<p>_<b>bits.yaml`` here) change three settings with the
code length and the protocol: the codebook-attention temperature ``softmax_temp``, the
tangent clip radius ``clip_r`` and the head width ``feat_dim``. The CPU profiles
(``configs/cpu/``) were chosen at protocol II / 32 bits and scaled ``feat_dim`` with the
bits. For each cell this trains HiHPQ (full) with

* ``profile``: the CPU profile as it is;
* ``reference``: the profile with the reference's values of those settings where they
  differ (the CPU budget, epochs, bank and warm-up, stays the profile's);
* when more than one setting differs, each one alone (``reference: <key>``),
* each ``--extra`` (``other: KEY=VALUE,...``): any other change to the profile worth a
  look on validation (a batch size, a longer schedule), measured the same way,

for seeds ``0 .. --seeds - 1`` on the same prepared features and bank (seed 0's splits),
and records the validation mAP of the validation-selected epoch beside its test mAP@1000.
The variant with the highest **mean validation** mAP is what the validation queries
prefer; the test queries are reported, never used to choose. An ``--extra`` variant
competes only where its paired validation gain over the profile is beyond Student's t
standard errors (95%, over its seeds): the profile keeps its place on a tie. ``--only-reference`` skips
the ``profile`` variant (when its runs exist elsewhere on the same machine);
``--no-reference`` skips the reference's variants (the profile against ``--extra`` only);
``--no-singles`` the one-setting-alone variants (protocol I, where a run costs minutes).
Each variant's validation mAP is also set against the profile's seed by seed (mean ± SE of
the paired differences, :func:`~hihpq_lib.evaluation.stats.paired_difference`) where both
ran the same seeds.

A variant that changes the frozen features (``--extra backbone=...``, a resolution, the
bank's views: any field of :func:`~benchmarks.run_all._prepare_key`) gets its own features
and bank on the same splits (computed once, or loaded from the cache) instead of the
profile's.
A variant whose backbone trains (``--extra tail_blocks=1,...``: the adapted tail; or the
online path) runs in its own mode on the same splits (:func:`~hihpq_lib.app.prepare.prepare_for`,
the trunk maps computed once for all its seeds), each seed from the pretrained backbone
(:meth:`~hihpq_lib.app.prepare.PreparedTail.restored`), and is trained and scored as
``hihpq train`` does (:func:`~hihpq_lib.app.pipeline.run_experiment`: the selected
epoch's model with the selected epoch's backbone).

Outputs (rewritten after every run, so a killed study keeps what it finished):
``<out>/results.json`` and ``<out>/results.md``; run folders under
``runs_dir()/bench/reference_cells/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.run_all import (
    _git_commit,
    _parse_seed_cell,
    _prepare_key,
    method_config,
    profile_config,
    run_learned,
)
from hihpq_lib.app.pipeline import run_experiment
from hihpq_lib.app.prepare import input_mode, prepare, prepare_for
from hihpq_lib.evaluation.stats import mean_std, paired_difference
from hihpq_lib.learning.config import load_config
from hihpq_lib.utils.atomic import atomic_write_text
from hihpq_lib.utils.runtime import cpu_description, project_dir, runs_dir

__all__ = ["SETTINGS", "reference_config", "variants", "main"]

#: The settings the reference's scripts change with the code length and protocol.
SETTINGS = ("softmax_temp", "clip_r", "feat_dim")


def reference_config(protocol: str, bits: int):
    """The reference's config of a cell (``configs/paper/paper_cifar10_<p>_<b>bits.yaml``)."""
    path = project_dir() / "configs" / "paper" / f"paper_cifar10_{protocol.lower()}_{bits}bits.yaml"
    return load_config(path)


def variants(profile, reference, extra: list[str] | tuple = ()) -> dict[str, list[str]]:
    """The ``--set`` overrides of each variant: the profile, the reference's values of
    :data:`SETTINGS` where they differ from the profile's, each alone when several do, and
    each of ``extra`` (``"KEY=VALUE[,KEY=VALUE]"``) as ``other: ...``.

    >>> from hihpq_lib.learning.config import TrainConfig
    >>> variants(TrainConfig(), TrainConfig(softmax_temp=5.0, clip_r=0.8))
    {'profile': [], 'reference': ['softmax_temp=5.0', 'clip_r=0.8'], 'reference: softmax_temp': ['softmax_temp=5.0'], 'reference: clip_r': ['clip_r=0.8']}
    >>> variants(TrainConfig(), TrainConfig())
    {'profile': []}
    >>> variants(TrainConfig(), TrainConfig(), ["batch_size=64", "epochs=40,tau=0.3"])
    {'profile': [], 'other: batch_size=64': ['batch_size=64'], 'other: epochs=40,tau=0.3': ['epochs=40', 'tau=0.3']}
    """
    diff = [
        f"{k}={getattr(reference, k)}"
        for k in SETTINGS
        if getattr(reference, k) != getattr(profile, k)
    ]
    out: dict[str, list[str]] = {"profile": []}
    if diff:
        out["reference"] = diff
    if len(diff) > 1:
        out.update({f"reference: {d.split('=')[0]}": [d] for d in diff})
    for e in extra:
        sets = [x.strip() for x in e.split(",") if x.strip()]
        if not sets or any("=" not in x for x in sets):
            raise ValueError(f"--extra {e!r}: give KEY=VALUE[,KEY=VALUE], e.g. batch_size=64")
        out[f"other: {','.join(sets)}"] = sets
    return out


def _paired(variant_runs: list[dict], profile_runs: list[dict]) -> dict | None:
    """Validation mAP of a variant minus the profile's over the seeds both ran, or None."""
    mine = {r["seed"]: r["val_map_best"] for r in variant_runs}
    base = {r["seed"]: r["val_map_best"] for r in profile_runs}
    seeds = sorted(set(mine) & set(base))
    if not seeds:
        return None
    return paired_difference([mine[s] for s in seeds], [base[s] for s in seeds])


def _summary(runs: list[dict]) -> dict:
    val_mean, val_std = mean_std([r["val_map_best"] for r in runs])
    test_mean, test_std = mean_std([r["map"] for r in runs])
    return {
        "n": len(runs),
        "val_mean": val_mean,
        "val_std": val_std,
        "test_mean": test_mean,
        "test_std": test_std,
    }


def _markdown(results: dict) -> str:
    lines = [
        "# Variants of the CPU profile (the reference's per-cell settings, --extra) against it (HiHPQ, full)",
        "",
        f"Started {results['meta']['started']}, {results['meta']['threads']} thread(s)"
        + (f" on {results['meta']['cpu']}" if results["meta"].get("cpu") else "")
        + (f", git {results['meta']['commit']}" if results["meta"].get("commit") else "")
        + "; "
        f"`python -m benchmarks.reference_cells {' '.join(results['meta']['argv'])}`. "
        "Validation: mAP of the validation-selected epoch on the validation queries "
        "(what chooses); test: mAP@1000 of that epoch on the test queries (reported only). "
        "mean ± std over seeds. An `other:` variant can be preferred only where its paired "
        "validation gain over the profile exceeds Student's t (95%) standard errors.",
        "",
        *([results["meta"]["note"], ""] if results["meta"].get("note") else []),
        "| cell | variant | overrides | seeds | validation | test | validation − profile "
        "(paired, ± SE) | per seed (val / test) | preferred on validation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        best = cell.get("preferred")
        profile_runs = cell["variants"].get("profile", {}).get("runs", [])
        for name, v in cell["variants"].items():
            if not v["runs"]:
                continue
            s = _summary(v["runs"])
            d = None if name == "profile" else _paired(v["runs"], profile_runs)
            paired = "—" if d is None else f"{d['delta']:+.4f} ± {d['se']:.4f} (n={d['n']})"
            per = ", ".join(f"{r['val_map_best']:.4f} / {r['map']:.4f}" for r in v["runs"])
            lines.append(
                f"| {cell['protocol']} · {cell['bits']} | {name} | "
                f"{' '.join(v['overrides']) or '—'} | {s['n']} | "
                f"{s['val_mean']:.4f} ± {s['val_std']:.4f} | "
                f"{s['test_mean']:.4f} ± {s['test_std']:.4f} | {paired} | {per} | "
                f"{'**yes**' if name == best else ''} |"
            )
    return "\n".join(lines) + "\n"


def _eligible(name: str, runs: list[dict], profile_runs: list[dict]) -> bool:
    """The profile and the reference's variants compete on mean validation mAP as they
    are; an ``other:`` variant only where its paired validation gain over the profile
    stands beyond Student's t (95%, its seeds) standard errors: the profile is the
    incumbent, and a change nobody asked for must show it helps."""
    if not name.startswith("other: "):
        return True
    d = _paired(runs, profile_runs)
    return d is not None and d["n"] > 1 and d["delta"] > 0 and d["delta"] >= d["t95"] * d["se"]


def own_inputs_needed(base, cfg) -> bool:
    """Whether the variant ``cfg`` of the profile ``base`` needs inputs of its own: a
    backbone that trains (another mode), or other frozen features (the fields of
    :func:`~benchmarks.run_all._prepare_key`, which ``run_all`` shares ``prepare`` by)."""
    return input_mode(cfg) != "bank" or _prepare_key(cfg) != _prepare_key(base)


def run_trained_backbone(prep, cfg, seed: int, workdir: Path) -> dict:
    """One seed of a variant whose backbone trains, on ``prep`` (``prepare_for(cfg)``):
    from the pretrained backbone (the state ``prep`` was prepared with, put back after),
    trained and scored by :func:`run_experiment` as ``hihpq train`` does. The same keys
    as :func:`~benchmarks.run_all.run_learned`'s that the tables read."""
    run_cfg = method_config(cfg, "hihpq", seed)
    module = prep._encoder().trainable  # None: an online backbone that does not train
    t0 = time.perf_counter()
    # restored() snapshots the current (pretrained) state and loads it back on exit
    with prep.restored(None if module is None else module.state_dict()):
        res = run_experiment(
            run_cfg, workdir / run_cfg.name, overwrite=True, progress=False, prepared=prep
        )
    wall = time.perf_counter() - t0
    return {
        "seed": seed,
        "map": float(res[f"map@{cfg.topk}_val_selected"]),
        "map_final": float(res[f"map@{cfg.topk}_final"]),
        "val_selected_epoch": int(res["val_selected_epoch"]),
        "val_map_best": float(res["val_map_best"]),
        "epochs": run_cfg.epochs,
        "input_mode": res["input_mode"],
        "train_wall_seconds": round(wall, 2),
        "stage_seconds": res["stage_seconds"],
        "rss_peak_mb": res["peak_rss_mb"],
        "code_bits": run_cfg.bits,
    }


def _write(out: Path, results: dict) -> None:
    for cell in results["cells"]:
        done = {n: v for n, v in cell["variants"].items() if v["runs"]}
        profile_runs = done.get("profile", {}).get("runs", [])
        done = {n: v for n, v in done.items() if _eligible(n, v["runs"], profile_runs)}
        if done:
            cell["preferred"] = max(done, key=lambda n: _summary(done[n]["runs"])["val_mean"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", _markdown(results))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", type=_parse_seed_cell, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="protocol I: the benchmark's 8")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/reference_cells"))
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--only-reference", action="store_true")
    which.add_argument(
        "--no-reference", action="store_true", help="the profile against --extra only"
    )
    ap.add_argument("--no-singles", action="store_true", help="skip the one-setting-alone variants")
    ap.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="other variants of the profile to measure the same way (e.g. batch_size=64)",
    )
    ap.add_argument("--quick", action="store_true", help="the benchmark's --quick subset (tests)")
    args = ap.parse_args(argv)
    results = {
        "meta": {
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "cpu": cpu_description(),
            "commit": _git_commit(project_dir()),
            "python": platform.python_version(),
            "quick": args.quick,
        },
        "cells": [],
    }
    workdir = runs_dir() / "bench" / "reference_cells"
    plans = []  # every cell's configs first: a bad --extra stops before any training
    for protocol, bits in args.cells:
        epochs = args.epochs if protocol == "I" else None
        base = profile_config(protocol, bits, quick=args.quick, epochs=epochs, threads=args.threads)
        try:
            todo = variants(base, reference_config(protocol, bits), args.extra)
            cfgs = {n: base.with_overrides(o) if o else base for n, o in todo.items()}
        except ValueError as exc:
            ap.error(str(exc))
        if args.only_reference:
            todo.pop("profile")
        if args.no_singles:
            todo = {n: o for n, o in todo.items() if not n.startswith("reference: ")}
        if args.no_reference:
            todo = {n: o for n, o in todo.items() if not n.startswith("reference")}
        plans.append((protocol, bits, base, todo, cfgs))
    prepared: dict = {}
    for protocol, bits, base, todo, cfgs in plans:
        cell = {
            "protocol": protocol,
            "bits": bits,
            "epochs": base.epochs,
            "variants": {n: {"overrides": o, "runs": []} for n, o in todo.items()},
        }
        results["cells"].append(cell)
        if protocol not in prepared:
            prep = prepare(base, progress=False)
            prepared[protocol] = (prep, prep.split("query"), prep.split("database"))
        prep, q, db = prepared[protocol]
        for name, overrides in todo.items():
            cfg = cfgs[name]
            tag = "profile" if not overrides else "_".join(o.replace("=", "") for o in overrides)
            folder = workdir / f"{protocol}_{bits}_{tag}"
            # a trained backbone or other frozen features: its own inputs (trunk maps or
            # features once for all seeds), on the same splits
            own = None
            if own_inputs_needed(base, cfg):
                own = prepare_for(cfg, progress=False, splits=prep.splits)
            trains = input_mode(cfg) != "bank"  # then ``own`` holds its mode's inputs
            # the profile's features, or the variant's own (split once)
            src, src_q, src_db = prep, q, db
            if own is not None and not trains:
                src, src_q, src_db = own, own.split("query"), own.split("database")
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                if trains:
                    run = run_trained_backbone(own, cfg, seed, folder)
                else:
                    run = run_learned(src, cfg, "hihpq", seed, src_q, src_db, folder)
                run["seconds"] = round(time.perf_counter() - t0, 1)
                cell["variants"][name]["runs"].append(run)
                print(
                    f"{protocol}·{bits} {name} seed {seed}: val {run['val_map_best']:.4f} "
                    f"test {run['map']:.4f} ({run['seconds']:.0f} s)",
                    flush=True,
                )
                _write(args.out, results)
    _write(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
