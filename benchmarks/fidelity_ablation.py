"""Reference-fidelity ablation: the effect of each fidelity option on the CPU profile.

Run: ``python -m benchmarks.fidelity_ablation [--protocol II] [--bits 32] [--seeds 3]
[--rows current reference ...] [--custom NAME=OPT1,OPT2] [--geometries lorentz euclidean]
[--epochs 12] [--threads 2] [--out DIR]`` (the committed table: ``--epochs 12 --threads 2``,
the budget of ``make bench``; its ``results.md`` lists the exact invocations).

Each row is a set of fidelity options (:data:`hihpq_lib.learning.config.FIDELITY_OPTIONS`) on
top of the CPU profile ``configs/cpu/cpu_cifar10_<p>_<b>bits.yaml`` (``--set`` adds
overrides to every row):

* ``current``: every option at our earlier behaviour (:data:`CURRENT_OPTIONS`);
* ``reference``: every option at the reference's (:data:`REFERENCE_OPTIONS`);
* one row per option: ``current`` with that option alone switched to the reference's
  (``lr_warmup`` and ``drop_last``, both schedule details, share the row ``schedule``;
  ``backbone_lr`` has no row: the CPU profile's backbone is frozen).

Every row trains HiHPQ (``geometry=lorentz``) and its Euclidean twin
(``geometry=euclidean``, hierarchy losses on, the same options) with the same seeds on the
same cached features and bank, so differences are paired per seed. Reported per row:
test mAP@1000 of the validation-selected epoch, the best validation mAP (the number
defaults are chosen on), each paired against ``current``, and the hyperbolic -
Euclidean margin per seed.

Results are written after every run to ``<out>/results.json`` and ``<out>/results.md``;
an interrupted invocation is resumed by running it again (finished runs are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.run_all import RESULTS_DIR, _git_commit, profile_config, write_atomic
from hihpq_lib.app.prepare import prepare
from hihpq_lib.evaluation.metrics import map_at_k
from hihpq_lib.evaluation.stats import mean_std, paired_difference
from hihpq_lib.learning.checkpoint import load_model
from hihpq_lib.learning.config import CURRENT_OPTIONS, REFERENCE_OPTIONS
from hihpq_lib.learning.retrieval import evaluate_map
from hihpq_lib.learning.training import train
from hihpq_lib.utils.runtime import runs_dir

__all__ = ["ROWS", "row_options", "row_overrides", "summarize", "format_markdown", "main"]

#: Row name -> the options switched to the reference's behaviour (on top of ``current``).
ROWS: dict[str, tuple[str, ...]] = {
    "current": (),
    "reference": tuple(k for k in REFERENCE_OPTIONS if k != "backbone_lr"),
    "prototype_loss": ("prototype_loss",),
    "instance_loss": ("instance_loss",),
    "cluster_input": ("cluster_input",),
    "subspace": ("subspace",),
    "eval_mode_after_clustering": ("eval_mode_after_clustering",),
    "schedule": ("lr_warmup", "drop_last"),
}
GEOMETRIES = ("lorentz", "euclidean")


def row_options(row: str) -> dict:
    """The full fidelity options of a row.

    >>> row_options("instance_loss")["instance_loss"], row_options("current")["instance_loss"]
    ('reference', 'masked')
    """
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
    return {**CURRENT_OPTIONS, **{k: REFERENCE_OPTIONS[k] for k in ROWS[row]}}


def row_overrides(row: str) -> list[str]:
    """``key=value`` overrides for a row (every fidelity option explicit)."""
    return [
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in row_options(row).items()
    ]


def _run(prep, base, row: str, geometry: str, seed: int, q, db, workdir: Path) -> dict:
    cfg = base.with_overrides(
        [
            *row_overrides(row),
            f"geometry={geometry}",
            f"seed={seed}",
            f"name=fidelity_{base.protocol}_{base.bits}_{row}_{geometry}_seed{seed}",
        ]
    )
    out = workdir / cfg.name
    k = min(cfg.topk, len(db.feats))
    t0 = time.perf_counter()
    res = train(cfg, prep.training_data(), out, progress=False)
    wall = time.perf_counter() - t0
    final_map = evaluate_map(res["model"], q, db, k, cfg.symmetric)
    best, _ = load_model(out, "best", in_dim=q.feats.shape[1])
    index = best.build_index(db.feats)
    _, idx = index.search(best.points(q.feats), k)
    return {
        "row": row,
        "geometry": geometry,
        "seed": seed,
        "map": float(map_at_k(q.labels, db.labels, idx)),
        "map_final": float(final_map),
        "val_map_best": float(res["best_val_map"]),
        "val_selected_epoch": int(res["best_epoch"]),
        "train_wall_seconds": round(wall, 1),
        "options": row_options(row),
    }


def _get(runs: list[dict], row: str, geometry: str) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["row"] == row and r["geometry"] == geometry}


def summarize(runs: list[dict]) -> list[dict]:
    """One summary per row: means, stds, paired deltas vs ``current`` and H - E margins."""
    out = []
    present = list(dict.fromkeys(r["row"] for r in runs))
    for row in [r for r in ROWS if r in present] + [r for r in present if r not in ROWS]:
        h, e = _get(runs, row, "lorentz"), _get(runs, row, "euclidean")
        opts = next(r["options"] for r in runs if r["row"] == row)
        s: dict = {
            "row": row,
            "options": [k for k, v in opts.items() if v != CURRENT_OPTIONS.get(k)],
        }
        for geo, d in (("lorentz", h), ("euclidean", e)):
            if not d:
                continue
            seeds = sorted(d)
            s[geo] = {
                "seeds": seeds,
                "map": mean_std([d[i]["map"] for i in seeds]),
                "val_map": mean_std([d[i]["val_map_best"] for i in seeds]),
            }
            cur = _get(runs, "current", geo)
            common = [i for i in seeds if i in cur]
            if row != "current" and common:
                s[geo]["delta_map"] = paired_difference(
                    [d[i]["map"] for i in common], [cur[i]["map"] for i in common]
                )
                s[geo]["delta_val"] = paired_difference(
                    [d[i]["val_map_best"] for i in common],
                    [cur[i]["val_map_best"] for i in common],
                )
        both = sorted(set(h) & set(e))
        if both:
            margins = [h[i]["map"] - e[i]["map"] for i in both]
            s["margin"] = {
                "per_seed": dict(zip(both, margins)),
                **paired_difference([h[i]["map"] for i in both], [e[i]["map"] for i in both]),
            }
        out.append(s)
    return out


def _ms(x: tuple[float, float], n: int) -> str:
    m, sd = x
    return f"{m:.4f} ± {sd:.4f}" if n > 1 else f"{m:.4f}"


def _d(d: dict | None) -> str:
    if not d:
        return "—"
    tail = f" ± {d['std']:.4f}" if d["n"] > 1 else ""
    return f"{d['delta']:+.4f}{tail}"


def format_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"# Reference-fidelity ablation: CIFAR-10 protocol {meta['protocol']}, "
        f"{meta['bits']} bits (CPU profile)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit: `{meta.get('git_commit')}`; started {meta['started']}; "
        f"{meta.get('cpus')} CPUs shared with other developers' work.",
        "",
        "mAP@1000 on the **test** queries of the validation-selected epoch (mean ± std "
        "over seeds); *val* is the best validation mAP (what defaults are chosen on); "
        "Δ are paired per seed against the row `current` (± the std of the paired "
        "differences); margin = HiHPQ − Euclidean twin (same options, same seeds), paired.",
        "",
        "| row (options at the reference's behaviour) | seeds | HiHPQ mAP | Δ mAP vs current "
        "| HiHPQ val | Δ val vs current | Euclidean mAP | Δ Eucl. vs current "
        "| margin H − E | margin per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["summary"]:
        h, e = s.get("lorentz"), s.get("euclidean")
        opts = ", ".join(s["options"]) or "none (our earlier behaviour)"
        n = len(h["seeds"]) if h else 0
        m = s.get("margin")
        per = ", ".join(f"{v:+.4f}" for v in m["per_seed"].values()) if m else "—"
        lines.append(
            f"| `{s['row']}`: {opts} | {n} | "
            + (f"{_ms(h['map'], n)} | {_d(h.get('delta_map'))} | " if h else "— | — | ")
            + (f"{_ms(h['val_map'], n)} | {_d(h.get('delta_val'))} | " if h else "— | — | ")
            + (
                f"{_ms(e['map'], len(e['seeds']))} | {_d(e.get('delta_map'))} | "
                if e
                else "— | — | "
            )
            + (f"{_d(m)} | {per} |" if m else "— | — |")
        )
    lines += [
        "",
        "Per run:",
        "",
        "| row | geometry | seed | mAP | final mAP | val mAP | epoch | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['row']} | {r['geometry']} | {r['seed']} | {r['map']:.4f} | "
            f"{r['map_final']:.4f} | {r['val_map_best']:.4f} | {r['val_selected_epoch']} | "
            f"{r['train_wall_seconds']:.0f} |"
        )
    if not results.get("complete"):
        lines += ["", "*Incomplete: some requested runs have not finished.*"]
    return "\n".join(lines) + "\n"


def _save(results: dict, out: Path) -> None:
    results["summary"] = summarize(results["runs"])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(results, indent=1, default=str))
    write_atomic(out / "results.md", format_markdown(results))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", choices=("I", "II"), default="II")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", nargs="+", default=None, help=f"of: {' '.join(ROWS)}")
    ap.add_argument(
        "--custom",
        nargs="*",
        default=[],
        metavar="NAME=OPT1,OPT2",
        help="extra rows: NAME with the listed options at the reference's behaviour",
    )
    ap.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=GEOMETRIES)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data", default=None, help="CIFAR-10 path (default: $HIHPQ_CIFAR10)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for item in args.custom:
        name, _, opts = item.partition("=")
        keys = tuple(k for k in opts.split(",") if k)
        bad = [k for k in keys if k not in REFERENCE_OPTIONS]
        if not name or bad:
            ap.error(
                f"--custom {item!r}: NAME=OPT1,OPT2 with options from {list(REFERENCE_OPTIONS)}"
            )
        ROWS[name] = keys
    args.rows = args.rows or [r for r in ROWS if r not in ("current",)] + ["current"]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    if args.data is None:
        args.data = os.environ.get("HIHPQ_CIFAR10")
    if args.out is None:
        args.out = RESULTS_DIR / "fidelity" / f"protocol_{args.protocol.lower()}_{args.bits}bits"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    runs = list(old.get("runs", []))
    done = {(r["row"], r["geometry"], r["seed"]) for r in runs}
    command = "python -m benchmarks.fidelity_ablation " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    commands = list(old.get("meta", {}).get("commands", []))
    commands.append(command)
    results = {
        "meta": {
            "protocol": args.protocol,
            "bits": args.bits,
            "command": " ; ".join(commands),
            "commands": commands,
            "started": old.get("meta", {}).get("started")
            or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "cpus": os.cpu_count(),
            "overrides": args.overrides,
        },
        "runs": runs,
        "complete": False,
    }
    base = profile_config(
        args.protocol,
        args.bits,
        epochs=args.epochs,
        data=args.data,
        threads=args.threads,
        extra=args.overrides,
    )
    todo = [
        (row, geo, seed)
        for seed in range(args.seeds)
        for row in args.rows
        for geo in args.geometries
        if (row, geo, seed) not in done
    ]
    print(f"fidelity ablation: {len(todo)} runs to do, {len(done)} done -> {out}", flush=True)
    prep = prepare(base, progress=False)
    q, db = prep.split("query"), prep.split("database")
    workdir = runs_dir() / "bench" / "fidelity"
    for row, geo, seed in todo:
        r = _run(prep, base, row, geo, seed, q, db, workdir)
        results["runs"].append(r)
        print(
            f"{row:28s} {geo:9s} seed {seed}: mAP {r['map']:.4f} val {r['val_map_best']:.4f} "
            f"(epoch {r['val_selected_epoch']}), {r['train_wall_seconds']:.0f} s",
            flush=True,
        )
        _save(results, out)
    have = {(r["row"], r["geometry"], r["seed"]) for r in results["runs"]}
    results["complete"] = all(
        (row, geo, s) in have
        for row in args.rows
        for geo in args.geometries
        for s in range(args.seeds)
    )
    _save(results, out)
    print(format_markdown(results))
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
