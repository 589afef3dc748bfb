"""What each frozen backbone and input size costs on this CPU, and what it buys.

Run: ``python -m benchmarks.backbone_study [--backbones efficientnet_lite0 ...]
[--resolutions 160 192 224 260] [--threads 2] [--runs runs/demo_a runs/demo_b ...]
[--json F] [--md F]``

Two parts:

* **cost** (always): the ONNX Runtime forward pass of each backbone at each input size,
  timed on ``--batches`` batches of 256 images after a warm-up (the best of
  ``--repeats``; the content of the images does not change the work of a convolution
  network, so random inputs are used). From the per-image time it gives the cold-start
  feature cost of the demo's profile: 60,000 CIFAR-10 images plus the 5,000 x 8 views
  of the augmentation bank, i.e. 100,000 forward passes; and the size of the trunk maps
  an adapted tail (``tail_blocks`` 1, docs/adapted_tail.md) would cache for those
  images (float16).
* **mAP** (``--runs``): the ``results.json`` of finished ``hihpq demo`` / ``hihpq train``
  runs (one change each, e.g. ``hihpq demo --set backbone=efficientnet_lite2``), read
  back into one table: validation-selected test mAP@1000, the validation mAP that chose
  the epoch, the float and faiss baselines on the same features.

Nothing here trains; the mAP part only reads what the runs wrote.
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

import torch

from hihpq_lib.data.backbones import OnnxBackbone, build_backbone
from hihpq_lib.data.backbones.tail import split_backbone

__all__ = ["forward_cost", "read_run", "read_bench_cell", "markdown", "main"]

#: Forward passes of the demo's cold start: 60,000 CIFAR-10 images + 5,000 x 8 bank views.
DEMO_FORWARDS = 60_000 + 5_000 * 8


def _map_elements(backbone: torch.nn.Module, resolution: int) -> int:
    """Elements of one image's trunk map for ``tail_blocks=1`` at ``resolution``."""
    trunk, _ = split_backbone(backbone, 1)
    with torch.no_grad():
        out = trunk(torch.zeros(1, 3, resolution, resolution))
    return int(out.numel())


def forward_cost(
    name: str, resolution: int, *, batches: int = 2, repeats: int = 2, batch: int = 256
) -> dict:
    """Time the ONNX forward pass of ``name`` at ``resolution`` px (per image, ms)."""
    backbone = build_backbone(name, pretrained=True).eval()
    runner = OnnxBackbone.from_backbone(backbone, resolution)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, generator=gen)
    runner(x[:16])  # warm-up: session arena, kernels
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(max(1, batches)):
            runner(x)
        best = min(best, (time.perf_counter() - start) / (batches * batch))
    elements = _map_elements(backbone, resolution)
    return {
        "backbone": name,
        "resolution": int(resolution),
        "ms_per_image": 1e3 * best,
        "demo_feature_s": best * DEMO_FORWARDS,
        "tail1_map_elements": elements,
        "tail1_cache_gb": elements * 2 * DEMO_FORWARDS / 1e9,
    }


#: Keys that say where or how a run ran, not what it trained.
_NOT_CHANGES = {"name", "data", "query_data", "threads", "device"}


def changes(cfg) -> str:
    """The keys where ``cfg`` differs from the CPU profile (``TrainConfig()``), as
    ``key=value`` text, or "none".

    >>> from hihpq_lib.learning.config import TrainConfig
    >>> changes(TrainConfig().with_overrides(["name=x", "feat_dim=128"]))
    'feat_dim=128'
    """
    from hihpq_lib.learning.config import TrainConfig

    base, mine = TrainConfig().to_dict(), cfg.to_dict()
    diff = [f"{k}={mine[k]}" for k in mine if k not in _NOT_CHANGES and mine[k] != base.get(k)]
    return ", ".join(diff) or "none"


def read_run(path: str | os.PathLike) -> dict:
    """One finished run's figures from its folder (``results.json`` + ``config.yaml``, as
    ``hihpq train`` / ``hihpq demo`` write them)."""
    from hihpq_lib.learning.config import load_config

    path = Path(path)
    data = json.loads((path / "results.json").read_text())
    cfg = load_config(path / "config.yaml")
    base = data.get("baselines") or {}

    def _class(name):
        scores = base.get(name)
        return scores.get("class") if isinstance(scores, dict) else None

    return {
        "run": str(path),
        "change": changes(cfg),
        "backbone": cfg.backbone,
        "resolution": cfg.resolution,
        "tail_blocks": cfg.tail_blocks,
        "val_map": data.get("val_map_best"),
        "test_map": data.get(f"map@{cfg.topk}_val_selected"),
        "test_map_final": data.get(f"map@{cfg.topk}_final"),
        "epoch": data.get("val_selected_epoch"),
        "float": _class("float"),
        "faiss_pq": _class("faiss_pq"),
        "stage_seconds": data.get("stage_seconds"),
        "peak_rss_mb": data.get("peak_rss_mb"),
    }


def read_bench_cell(
    path: str | os.PathLike,
    protocol: str = "II",
    bits: int = 32,
    seed: int = 0,
    *,
    backbone: str | None = None,
    resolution: int | None = None,
) -> dict:
    """The HiHPQ run of one ``make bench`` cell and seed, from its ``results.json``, as a
    :func:`read_run` row (a profile's own run, beside the one-change runs); the float
    and faiss PQ figures of the same cell and file. A results file does not record the
    backbone: ``backbone`` / ``resolution`` say which it ran (default: ``TrainConfig()``'s)."""
    from hihpq_lib.learning.config import TrainConfig

    data = json.loads(Path(path).read_text())
    rows = {r["method"]: r for r in data["rows"] if (r["protocol"], r["bits"]) == (protocol, bits)}
    if "hihpq" not in rows:
        raise ValueError(f"{path} has no HiHPQ row at protocol {protocol} / {bits} bits")
    run = next((x for x in rows["hihpq"].get("runs", []) if x["seed"] == seed), None)
    if run is None:
        raise ValueError(f"{path} has no HiHPQ seed {seed} at protocol {protocol} / {bits} bits")
    profile = TrainConfig()
    commit = str(data.get("meta", {}).get("git_commit") or "?")[:7]
    return {
        "run": f"{path} ({protocol} / {bits} bits, seed {seed})",
        "change": f"make bench seed {seed} (git {commit})",
        "backbone": backbone or profile.backbone,
        "resolution": int(resolution or profile.resolution),
        "tail_blocks": profile.tail_blocks,
        "val_map": run.get("val_map_best"),
        "test_map": run.get("map"),
        "test_map_final": run.get("map_final"),
        "epoch": run.get("val_selected_epoch"),
        "float": rows.get("float", {}).get("map"),
        "faiss_pq": rows.get("faiss_pq", {}).get("map"),
        "stage_seconds": None,
        "peak_rss_mb": None,
    }


def _fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def markdown(costs: list[dict], runs: list[dict], meta: dict) -> str:
    lines = [
        "# Backbone and input size: cost and mAP on this CPU",
        "",
        f"Measured {meta['date']} on {meta['machine']}, {meta['threads']} thread(s), "
        f"ONNX Runtime, batches of 256 (`python -m benchmarks.backbone_study`).",
        "",
        "## Cost of the frozen forward pass",
        "",
        f"Demo cold start = {DEMO_FORWARDS:,} forward passes (60,000 images + 5,000 x 8 bank "
        "views). The tail cache is the float16 trunk maps `tail_blocks: 1` would store for "
        "those images.",
        "",
        "| backbone | px | ms / image | demo features (min) | tail-1 map | tail-1 cache (GB) |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        lines.append(
            f"| {c['backbone']} | {c['resolution']} | {c['ms_per_image']:.2f} | "
            f"{c['demo_feature_s'] / 60:.1f} | {c['tail1_map_elements']:,} | "
            f"{c['tail1_cache_gb']:.2f} |"
        )
    if runs:
        lines += [
            "",
            "## mAP@1000 of finished runs (CIFAR-10 protocol II, 32 bits, one seed)",
            "",
            "| change | backbone | px | tail | val mAP (best) | test mAP (val-selected) | test mAP (final) "
            "| epoch | float | faiss PQ | stages (min) | peak GB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            stages = r.get("stage_seconds")
            stages = "—" if not stages else f"{sum(stages.values()) / 60:.1f}"
            peak = "—" if not r.get("peak_rss_mb") else f"{r['peak_rss_mb'] / 1024:.1f}"
            lines.append(
                f"| {r.get('change', '—')} | {r['backbone']} | {r['resolution']} | "
                f"{r['tail_blocks']} | {_fmt(r['val_map'])} | {_fmt(r['test_map'])} | {_fmt(r.get('test_map_final'))} | "
                f"{_fmt(r['epoch'], 'd')} | {_fmt(r['float'])} | {_fmt(r['faiss_pq'])} | "
                f"{stages} | {peak} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--backbones",
        nargs="+",
        default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    ap.add_argument("--resolutions", nargs="+", type=int, default=[128, 160, 192, 224, 260])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--runs", nargs="*", default=[], help="run folders to read mAP from")
    ap.add_argument(
        "--bench",
        default=None,
        nargs="+",
        help="make bench results.json files, each as PATH or PATH:BACKBONE (results files do "
        "not record the backbone): the protocol II / 32-bit HiHPQ seed-0 run joins the table",
    )
    ap.add_argument(
        "--costs-from",
        type=Path,
        default=None,
        help="reuse the cost rows (and their date) of an earlier --json instead of timing again",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    costs, meta_from = [], None
    if args.costs_from is not None:
        try:
            earlier = json.loads(args.costs_from.read_text())
            costs, meta_from = list(earlier["costs"]), dict(earlier["meta"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read costs from {args.costs_from}: {exc}", file=sys.stderr)
            return 2
    for name in args.backbones if args.costs_from is None else []:
        for res in args.resolutions:
            c = forward_cost(name, res, batches=args.batches, repeats=args.repeats)
            print(
                f"{name:<20} {res:>4} px  {c['ms_per_image']:6.2f} ms/image  "
                f"demo features {c['demo_feature_s'] / 60:5.1f} min  "
                f"tail-1 cache {c['tail1_cache_gb']:.2f} GB",
                flush=True,
            )
            costs.append(c)
    runs = []
    for spec in args.bench or []:
        path, _, backbone = str(spec).partition(":")
        try:
            runs.append(read_bench_cell(path, backbone=backbone or None))
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    for path in args.runs:
        try:
            runs.append(read_run(path))
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "load_avg": os.getloadavg(),
    }
    if meta_from is not None:
        meta = {**meta_from, "runs_read": meta["date"]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "costs": costs, "runs": runs}, indent=2))
    text = markdown(costs, runs, meta)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
