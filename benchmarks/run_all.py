"""The benchmark table: HiHPQ against baselines and ablations on CIFAR-10 (``make bench``).

Run: ``python -m benchmarks.run_all [--quick] [--protocols I II] [--bits 16 32 64]
[--methods ...] [--seeds 3] [--epochs N] [--threads N] [--out DIR] [--adc-only]``

For each protocol, :func:`hihpq_lib.app.prepare.prepare` computes (or loads from the shared
feature cache) the frozen backbone features and the augmentation bank **once**;
every method then works on those same features, and every learned method gets the same
budget (epochs, views, seed) from the CPU profile ``configs/cpu/cpu_cifar10_<p>_<b>bits.yaml``:

=================  ======================================================================
method             what it is
=================  ======================================================================
``float``          float features, exact cosine search (``FloatBaseline``), 16 x 1280 bits (float16, as cached)
``faiss_pq``       ``FaissPQ(M)``: k-means product quantization of the raw features
``faiss_opq``      ``FaissOPQ(M, d_out=256)``: a learned 1280 -> 256 rotation, then PQ
``euclidean_cpq``  Euclidean contrastive PQ (MeCoQ/SPQ-style): ``geometry=euclidean,
                   proto_weight=0, instance_weight=0``
``euclidean_hier`` Euclidean PQ *with* the hierarchy losses (``geometry=euclidean``)
``hihpq_no_hier``  HiHPQ without the hierarchy losses (``proto_weight=0, instance_weight=0``)
``hihpq``          HiHPQ, full (the profile's defaults)
=================  ======================================================================

What is measured, per (protocol, bits, method):

* mAP@1000 on the **test** queries of the validation-selected epoch (the reported number)
  and of the final epoch; the validation queries alone choose the epoch;
* training time (wall clock of ``training.train`` minus its per-epoch validation), encode
  time (database -> codes), search throughput (test queries/s, query embedding included);
* memory: per method, the peak resident memory sampled every 20 ms by a background
  thread during the method, and its increase over the resident memory at the method's
  start (``rss_delta_mb``); per protocol, the process-wide peak (``ru_maxrss``). All
  methods run in this one process (no subprocesses), so the float features are counted
  once, in ``prepare``;
* ratios: HiHPQ minus each other method in mAP (paired over seeds where both have the
  same seeds), and our ADC search throughput over faiss ``IndexPQ``'s on the same N
  (the database size), M and K = 256, measured in this run with
  :mod:`benchmarks.adc_throughput` on one thread and on ``--threads``. ``--adc-only``
  re-measures just this table in an existing ``--out`` folder (after a change to the
  search code; the codes are random, so no training is needed) and says so in
  ``results.md``.

Seeds: the learned methods at protocol II / 32 bits (``--seed-cells``: other cells, e.g.
``I:32``) run ``--seeds`` times (seeds 0, 1, ...)
and report mean ± std; a seed changes the training randomness only (initialisation,
batches, view pairs, clustering), never the splits or the augmentation bank, which come
from seed 0 for every method. Other cells use seed 0.

Outputs (written atomically, after every method, so a crash keeps what was done):
``<out>/results.json`` and ``<out>/results.md``. Training run folders (checkpoints) go to
``runs_dir()/bench/`` (``HIHPQ_RUNS_DIR``), not to the committed results folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import psutil
import torch

from benchmarks import adc_throughput
from hihpq_lib.app.prepare import prepare
from hihpq_lib.evaluation.baselines import FaissOPQ, FaissPQ, FloatBaseline
from hihpq_lib.evaluation.metrics import map_at_k
from hihpq_lib.evaluation.stats import compute_deltas, mean_std
from hihpq_lib.learning.checkpoint import load_model
from hihpq_lib.learning.config import (
    CIFAR10_PROTOCOLS,
    QUICK_OVERRIDES,
    ConfigError,
    TrainConfig,
    cpu_profile_path,
    load_config,
)
from hihpq_lib.learning.retrieval import evaluate_map
from hihpq_lib.learning.training import train
from hihpq_lib.utils.runtime import cpu_description, fast_mode, runs_dir
from hihpq_lib.utils.timing import peak_rss_mb

__all__ = [
    "METHODS",
    "Method",
    "RSSSampler",
    "profile_config",
    "method_config",
    "seeds_for",
    "aggregate_runs",
    "compute_deltas",
    "format_markdown",
    "format_text",
    "write_atomic",
    "measure_adc",
    "remeasure_adc",
    "main",
]

PROTOCOLS = CIFAR10_PROTOCOLS
REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout these scripts belong to
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Output dimension of the OPQ transform (1280 -> 256: full-dimension OPQ takes minutes).
OPQ_D_OUT = 256
#: On top of the demo's quick overrides (which share its feature cache): the quick subset
#: has 300 training images, so smaller batches and more epochs give the learned methods
#: about 90 optimisation steps instead of 8 (a few seconds each).
QUICK_EXTRA = ("epochs=10", "batch_size=32")
#: The cell that runs several seeds.
SEED_CELL = ("II", 32)
#: Memory budget protocol I must stay under (MB).
MEMORY_BUDGET_MB = 8 * 1024


@dataclass(frozen=True)
class Method:
    """One row of the table: a baseline or a learned configuration."""

    key: str
    label: str
    kind: str  # "baseline" or "learned"
    overrides: tuple[str, ...] = field(default=())
    uses_hierarchy: bool = False


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("float", "float features (cosine)", "baseline"),
        Method("faiss_pq", "faiss PQ", "baseline"),
        Method("faiss_opq", f"faiss OPQ (1280->{OPQ_D_OUT})", "baseline"),
        Method(
            "euclidean_cpq",
            "Euclidean contrastive PQ (MeCoQ/SPQ-style)",
            "learned",
            # the profile's other settings stay (at II · 16 its neighbour term too): the four
            # learned rows differ only in the geometry and the hierarchy losses
            ("geometry=euclidean", "proto_weight=0", "instance_weight=0"),
        ),
        Method(
            "euclidean_hier",
            "Euclidean PQ + hierarchy losses",
            "learned",
            ("geometry=euclidean",),
            uses_hierarchy=True,
        ),
        Method(
            "hihpq_no_hier",
            "HiHPQ w/o hierarchy losses",
            "learned",
            ("proto_weight=0", "instance_weight=0"),
        ),
        Method("hihpq", "HiHPQ (full)", "learned", (), uses_hierarchy=True),
    )
}
REFERENCE = "hihpq"


# ----------------------------------------------------------------------------- memory
class RSSSampler:
    """Peak resident memory of this process while a ``with`` block runs (sampled).

    A daemon thread reads the resident set size every ``interval`` seconds (psutil);
    spikes shorter than the interval can be missed. ``ru_maxrss`` cannot do this: it is a
    process-wide high-water mark that never goes down.

    Attributes (after the block)
    ----------------------------
    start_mb, peak_mb, end_mb : float, resident memory in MB.
    delta_mb : float, ``peak_mb - start_mb``.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = float(interval)
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = self.end_mb = 0.0

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __enter__(self) -> RSSSampler:
        self.start_mb = self.peak_mb = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end_mb = self._rss()
        self.peak_mb = max(self.peak_mb, self.end_mb)

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


# ----------------------------------------------------------------------------- configs
def profile_path(protocol: str, bits: int) -> Path:
    """``configs/cpu/cpu_cifar10_<protocol>_<bits>bits.yaml`` of this checkout (checked to
    exist; :func:`hihpq_lib.learning.config.cpu_profile_path`)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return cpu_profile_path(protocol, bits, root=REPO_ROOT)


def profile_config(
    protocol: str,
    bits: int,
    *,
    quick: bool = False,
    epochs: int | None = None,
    data: str | None = None,
    threads: int = 0,
    extra: list[str] | None = None,
) -> TrainConfig:
    """The base configuration of one (protocol, bits) cell: the CPU profile + options.

    ``quick`` applies the demo's quick overrides (a 300-image-per-class subset, a 3-view
    bank) and :data:`QUICK_EXTRA` (10 epochs, batches of 32); ``epochs`` overrides the
    profile's epoch budget for every learned method; ``extra`` are further ``key=value``
    overrides (``--set``).
    """
    items = [*QUICK_OVERRIDES, *QUICK_EXTRA] if quick else []
    if epochs is not None:
        items.append(f"epochs={int(epochs)}")
    if data:
        items.append(f"data={data}")
    if threads:
        items.append(f"threads={int(threads)}")
    items += list(extra or [])
    return load_config(profile_path(protocol, bits), items)


def method_config(base: TrainConfig, method: str, seed: int) -> TrainConfig:
    """``base`` with a learned method's overrides and a training seed.

    >>> cfg = method_config(TrainConfig(), "euclidean_cpq", 2)
    >>> cfg.geometry, cfg.proto_weight, cfg.instance_weight, cfg.seed
    ('euclidean', 0.0, 0.0, 2)
    """
    m = _method(method)
    if m.kind != "learned":
        raise ValueError(f"{method!r} is a baseline, not a learned configuration")
    name = f"bench_{base.protocol}_{base.bits}bits_{method}_seed{seed}"
    return base.with_overrides([*m.overrides, f"seed={int(seed)}", f"name={name}"])


def _method(key: str) -> Method:
    if key not in METHODS:
        raise ValueError(f"unknown method {key!r}; known methods: {', '.join(METHODS)}")
    return METHODS[key]


def seeds_for(
    protocol: str, bits: int, method: str, n_seeds: int, cells: tuple = (SEED_CELL,)
) -> list[int]:
    """Seeds a cell runs: ``range(n_seeds)`` for learned methods in ``cells`` (by default
    II / 32 bits; ``--seed-cells``), else [0].

    >>> seeds_for("II", 32, "hihpq", 3), seeds_for("II", 16, "hihpq", 3)
    ([0, 1, 2], [0])
    >>> seeds_for("II", 32, "faiss_pq", 3)
    [0]
    >>> seeds_for("I", 32, "hihpq", 3, cells=(("I", 32),))
    [0, 1, 2]
    """
    if _method(method).kind == "learned" and (protocol, int(bits)) in cells:
        return list(range(max(1, int(n_seeds))))
    return [0]


def _parse_seed_cell(text: str) -> tuple[str, int]:
    """``"I:32"`` -> ``("I", 32)`` (for ``--seed-cells``)."""
    protocol, _, bits = text.partition(":")
    if protocol not in PROTOCOLS or not bits.isdigit():
        raise argparse.ArgumentTypeError(
            f"a seed cell is PROTOCOL:BITS with PROTOCOL in {PROTOCOLS}, e.g. II:32; got {text!r}"
        )
    return protocol, int(bits)


def dataset_label(cfg: TrainConfig, dataset) -> str:
    """What the tables call the dataset: "CIFAR-10", else the dataset's own name (an image
    folder's name, :attr:`~hihpq_lib.data.ImageDataset.display_name`).

    >>> from types import SimpleNamespace as NS
    >>> dataset_label(NS(dataset="folder"), NS(display_name="tiny-imagenet-200-subset"))
    'tiny-imagenet-200-subset'
    """
    return "CIFAR-10" if cfg.dataset == "cifar10" else dataset.display_name


def _prepare_key(cfg: TrainConfig) -> tuple:
    """The config fields that decide the features and bank (equal keys share ``prepare``)."""
    names = (
        "dataset",
        "protocol",
        "data",
        "query_data",
        "seed",
        "n_val_per_class",
        "subsample_per_class",
        "backbone",
        "pretrained",
        "resolution",
        "engine",
        "n_views",
        "view_budget",
    )
    return tuple(getattr(cfg, n) for n in names)


# ----------------------------------------------------------------------------- methods
def run_learned(prep, base: TrainConfig, method: str, seed: int, q, db, workdir: Path) -> dict:
    """Train one learned method on ``prep``'s bank; evaluate on the test queries.

    The validation-selected checkpoint (``best.pt``) gives ``map``, the encode time and
    the search throughput; the final model gives ``map_final``.
    """
    cfg = method_config(base, method, seed)
    out = workdir / cfg.name
    k = min(cfg.topk, len(db.feats))
    with RSSSampler() as mem:
        data = prep.training_data()
        t0 = time.perf_counter()
        res = train(cfg, data, out, progress=False)
        wall = time.perf_counter() - t0
        del data
        eval_s = sum(h.get("eval_seconds", 0.0) for h in res["history"])
        final_map = evaluate_map(res["model"], q, db, k, cfg.symmetric)
        best, _ = load_model(out, "best", in_dim=q.feats.shape[1])
        t = time.perf_counter()
        index = best.build_index(db.feats)
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        _, idx = index.search(best.points(q.feats), k)
        search_s = time.perf_counter() - t
        best_map = map_at_k(q.labels, db.labels, idx)
    return {
        "seed": seed,
        "map": float(best_map),
        "map_final": float(final_map),
        "val_selected_epoch": int(res["best_epoch"]),
        "val_map_best": float(res["best_val_map"]),
        "epochs": cfg.epochs,
        "train_seconds": round(wall - eval_s, 2),
        "train_wall_seconds": round(wall, 2),
        "encode_seconds": round(encode_s, 3),
        "search_qps": len(q.feats) / max(search_s, 1e-9),
        "rss_peak_mb": round(mem.peak_mb, 1),
        "rss_delta_mb": round(mem.delta_mb, 1),
        "code_bits": cfg.bits,
        # codebook_refine: each saved model's Lloyd refinement (validation before / after, kept)
        "codebook_refine": res.get("refine"),
    }


def run_baseline(method: str, M: int, train_feats: np.ndarray, q, db, k: int) -> dict:  # noqa: N803
    """Fit, add and search one faiss baseline on the frozen features.

    faiss PQ needs at least K = 256 training vectors and OPQ at least as many as the
    feature dimension; with fewer (``--quick`` subsets) they are fit on the database
    features instead (no labels involved) and ``fit_on`` says so.
    """
    if method == "float":
        est = FloatBaseline()
    elif method == "faiss_pq":
        est = FaissPQ(M)
    elif method == "faiss_opq":
        est = FaissOPQ(M, d_out=OPQ_D_OUT)
    else:
        raise ValueError(f"{method!r} is not a baseline; baselines: float, faiss_pq, faiss_opq")
    db_np, q_np = db.feats.numpy(), q.feats.numpy()
    fit_x, fit_on = train_feats, "train"
    need = {"faiss_pq": 256, "faiss_opq": train_feats.shape[1]}.get(method, 1)
    if len(fit_x) < need:
        fit_x, fit_on = db_np, "database"
    with RSSSampler() as mem:
        t = time.perf_counter()
        est.fit(fit_x)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        est.add(db_np)
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        _, idx = est.search(q_np, k)
        search_s = time.perf_counter() - t
        score = map_at_k(q.labels, db.labels, torch.as_tensor(idx))
    return {
        "seed": 0,
        "map": float(score),
        "map_final": float(score),
        "train_seconds": round(fit_s, 2),
        "encode_seconds": round(encode_s, 3),
        "search_qps": len(q_np) / max(search_s, 1e-9),
        "rss_peak_mb": round(mem.peak_mb, 1),
        "rss_delta_mb": round(mem.delta_mb, 1),
        "code_bits": int(est.code_size_bits),
        "feature_dim": int(train_feats.shape[1]),
        "fit_on": fit_on,
    }


# ----------------------------------------------------------------------------- tables
def aggregate_runs(protocol: str, bits: int, method: str, runs: list[dict]) -> dict:
    """One table row from the per-seed runs of a cell: means, stds, maxima of memory."""
    if not runs:
        raise ValueError(f"no runs for {protocol}/{bits}/{method}")
    m = _method(method)
    label = m.label
    if method == "faiss_opq" and runs[0].get("feature_dim", 1280) != 1280:
        # the label names the transform; a concatenation of backbones is wider than 1280
        label = label.replace("1280->", f"{runs[0]['feature_dim']}->")
    row = {"protocol": protocol, "bits": int(bits), "method": method, "label": label}
    row["kind"] = m.kind
    row["seeds"] = [r["seed"] for r in runs]
    row["n_seeds"] = len(runs)
    for key in ("map", "map_final"):
        row[key], row[f"{key}_std"] = mean_std([r[key] for r in runs])
    for key in ("train_seconds", "encode_seconds", "search_qps"):
        row[key] = round(mean_std([r[key] for r in runs])[0], 3)
    for key in ("rss_peak_mb", "rss_delta_mb"):
        row[key] = max(r[key] for r in runs)
    row["code_bits"] = runs[0]["code_bits"]
    for key in ("fit_on", "shared_across_bits"):
        if key in runs[0]:
            row[key] = runs[0][key]
    row["runs"] = runs
    return row


def _fmt_map(row: dict, key: str = "map") -> str:
    value, std = row[key], row.get(f"{key}_std", 0.0)
    if row.get("n_seeds", 1) > 1:
        return f"{value:.4f} ± {std:.4f} (n={row['n_seeds']})"
    return f"{value:.4f}"


def _fmt_delta(d: dict | None) -> str:
    if d is None:
        return "—"
    if d["n"] > 1:
        return f"{d['delta_map']:+.4f} ± {d['delta_std']:.4f}"
    return f"{d['delta_map']:+.4f}"


def _order(rows: list[dict]) -> list[dict]:
    keys = list(METHODS)
    return sorted(rows, key=lambda r: (r["protocol"], r["bits"], keys.index(r["method"])))


def _table_cells(results: dict) -> tuple[list[str], list[list[str]]]:
    deltas = {(d["protocol"], d["bits"], d["method"]): d for d in results.get("deltas", [])}
    head = [
        "protocol",
        "bits",
        "method",
        "mAP@1000 (val-selected)",
        "mAP@1000 (final epoch)",
        "HiHPQ − this",
        "train s",
        "encode s",
        "search q/s",
        "peak RSS MB (+Δ)",
    ]
    body = []
    for r in _order(results.get("rows", [])):
        d = deltas.get((r["protocol"], r["bits"], r["method"]))
        body.append(
            [
                r["protocol"],
                str(r["bits"]),
                r["label"] + (" [fit on database]" if r.get("fit_on") == "database" else ""),
                _fmt_map(r),
                _fmt_map(r, "map_final") if r["kind"] == "learned" else "—",
                "(reference)" if r["method"] == REFERENCE else _fmt_delta(d),
                f"{r['train_seconds']:.1f}",
                f"{r['encode_seconds']:.2f}",
                f"{r['search_qps']:.0f}",
                f"{r['rss_peak_mb']:.0f} (+{r['rss_delta_mb']:.0f})",
            ]
        )
    return head, body


def _adc_cells(results: dict) -> tuple[list[str], list[list[str]]]:
    head = [
        "protocol",
        "bits",
        "N",
        "M",
        "K",
        "Q",
        "threads",
        "faiss IndexPQ q/s",
        "ours Lorentz q/s",
        "ours Euclidean q/s",
        "Lorentz/faiss",
        "Euclidean/faiss",
    ]
    body = []
    for a in results.get("adc", []):
        body.append(
            [
                a["protocol"],
                str(a["bits"]),
                str(a["N"]),
                str(a["M"]),
                str(a["K"]),
                str(a["Q"]),
                str(a["threads"]),
                f"{a['faiss_qps']:.0f}",
                f"{a['lorentz_qps']:.0f}",
                f"{a['euclidean_qps']:.0f}",
                f"{a['ratio_lorentz']:.2f}",
                f"{a['ratio_euclidean']:.2f}",
            ]
        )
    return head, body


def _markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _text_table(head: list[str], body: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def format_text(results: dict) -> str:
    """The main table and the ADC table as plain text (what the run prints)."""
    main_t = _text_table(*_table_cells(results))
    adc_t = _text_table(*_adc_cells(results))
    return (
        f"{main_t}\n\nADC search throughput, same N, M, K (ours / faiss > 1: ours faster)\n{adc_t}"
    )


def format_markdown(results: dict) -> str:
    """``results.md``: the main table, the ADC table and how to read them."""
    meta = results.get("meta", {})
    lines = [
        f"# HiHPQ benchmark: {meta.get('dataset', 'CIFAR-10')}, frozen backbone features "
        "(the CPU profile, configs/cpu/)",
        "",
        f"Mode: **{'quick' if meta.get('quick') else 'full'}**"
        + ("" if results.get("complete") else " — **incomplete (run interrupted or running)**")
        + f". Started {meta.get('started', '?')}, {meta.get('threads', '?')} thread(s), "
        f"load average {meta.get('load_before', float('nan')):.2f} before / "
        f"{meta.get('load_after', float('nan')):.2f} after on {meta.get('cpus', '?')} CPUs"
        + (f" ({meta['cpu']})" if meta.get("cpu") else "")
        + ".",
        "",
        "mAP@1000 on the test queries; the validation queries alone pick the reported epoch. "
        "`HiHPQ − this` is paired over seeds where both ran the same seeds (mean ± std of "
        "the per-seed differences). Memory: peak resident memory sampled during the method "
        "(+ its increase over the method's start), all methods in one process.",
        "",
        _markdown_table(*_table_cells(results)),
        "",
        "## ADC search throughput (same N, M, K = 256; random codes; "
        + (
            f"re-measured {meta['adc_remeasured']['date']} at commit "
            f"{meta['adc_remeasured'].get('git_commit')} by `--adc-only`: the main table above "
            "is from the run started " + str(meta.get("started", "?")) + ")"
            if meta.get("adc_remeasured")
            else "measured in this run)"
        ),
        "",
        "faiss `IndexPQ` (squared-L2 tables) against our `PQIndex` with Lorentz geodesic "
        "tables (what HiHPQ uses) and with Euclidean tables (apples to apples). "
        "A ratio below 1 means our search is slower than faiss.",
        "",
        _markdown_table(*_adc_cells(results)),
    ]
    for protocol, info in sorted(results.get("protocols", {}).items()):
        lines += [
            "",
            f"Protocol {protocol}: {info.get('n_train')} training, {info.get('n_query')} query, "
            f"{info.get('n_database')} database images; process peak RSS "
            f"{info.get('process_peak_rss_mb', float('nan')):.0f} MB "
            f"(under 8 GB: {info.get('under_8gb')}).",
        ]
    notes = meta.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a ``.tmp`` file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save(results: dict, out: Path) -> None:
    write_atomic(out / "results.json", json.dumps(results, indent=1, default=float) + "\n")
    write_atomic(out / "results.md", format_markdown(results))


# ----------------------------------------------------------------------------- driver
def _git_commit(root: Path | None = None) -> str | None:
    """The checkout's short commit, with ``+changes`` when tracked files outside
    ``benchmarks/results/`` differ from it (a run started before its code was committed
    names the commit it does *not* exactly reproduce); None outside a git checkout."""
    root = REPO_ROOT if root is None else root

    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return res.stdout.strip() if res.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if not commit:
            return None
        changed = git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ":(top)",
            ":(top,exclude)benchmarks/results",
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


def _default_data() -> str | None:
    return os.environ.get("HIHPQ_CIFAR10") or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="HiHPQ vs baselines and ablations on CIFAR-10: results.json + results.md",
    )
    ap.add_argument("--quick", action="store_true", help="subset, few epochs, II, 16+32 bits")
    ap.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=None)
    ap.add_argument("--bits", nargs="+", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=None, help=f"subset of: {' '.join(METHODS)}")
    ap.add_argument("--seeds", type=int, default=None, help="seeds at II/32 bits (default 3)")
    ap.add_argument(
        "--seed-cells",
        nargs="+",
        type=_parse_seed_cell,
        default=[SEED_CELL],
        metavar="PROTOCOL:BITS",
        help="cells whose learned methods run --seeds seeds (default II:32)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every learned method")
    ap.add_argument("--threads", type=int, default=None, help="torch and faiss threads")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument(
        "--data",
        default=None,
        help="CIFAR-10 path (default: $HIHPQ_CIFAR10), or an image folder with --set "
        "dataset=folder (the tables then carry the folder's name)",
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides")
    ap.add_argument("--quiet", action="store_true", help="no feature-extraction progress bars")
    ap.add_argument(
        "--adc-only",
        action="store_true",
        help="re-measure only the ADC table of the results already in --out (no training)",
    )
    args = ap.parse_args(argv)
    args.quick = args.quick or fast_mode()
    if args.protocols is None:
        args.protocols = ["II"] if args.quick else ["I", "II"]
    if args.bits is None:
        args.bits = [16, 32] if args.quick else [16, 32, 64]
    if args.methods is None:
        args.methods = list(METHODS)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads is None:
        args.threads = torch.get_num_threads()
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.out is None:
        args.out = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    args.data = args.data or _default_data()
    for p in args.protocols:  # fail before any compute
        for b in args.bits:
            try:
                profile_config(p, b, quick=args.quick, epochs=args.epochs, extra=args.overrides)
            except ConfigError as err:
                ap.error(str(err))
    return args


def measure_adc(protocol: str, bits: int, problem: tuple, threads: int, repeats: int) -> list[dict]:
    """ADC rows of one cell: :func:`adc_throughput.compare` on one thread and on ``threads``.

    ``problem`` is ``(N, M, K, d, Q, topk)``. Prints one line per thread count.
    """
    rows = []
    for t in sorted({1, threads}):
        row = adc_throughput.compare(*problem, t, repeats)
        rows.append({"protocol": protocol, "bits": bits, **row})
        print(
            f"[{protocol}/{bits}b] ADC q/s on {t} thread(s): faiss {row['faiss_qps']:.0f}, "
            f"ours Lorentz {row['lorentz_qps']:.0f} (x{row['ratio_lorentz']:.2f}), "
            f"ours Euclidean {row['euclidean_qps']:.0f} (x{row['ratio_euclidean']:.2f})",
            flush=True,
        )
    return rows


def remeasure_adc(out: Path, threads: int, *, repeats: int = 2) -> dict:
    """Re-measure the ADC table of ``out/results.json`` in place (``--adc-only``).

    The ADC rows use random codes at each cell's N, M, K, so they do not depend on the
    training run: after a change to the search code they can be measured again without
    re-training. Every cell (protocol, bits) of the old table is measured on one thread
    and on ``threads``; ``meta.adc_remeasured`` records when, at which commit and under
    which load, and ``results.md`` says so above the table.
    """
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"--adc-only needs an earlier run's {path}; none found")
    results = json.loads(path.read_text())
    cells: dict[tuple, dict] = {}
    for a in results.get("adc", []):
        cells.setdefault((a["protocol"], a["bits"]), a)
    if not cells:
        raise ValueError(f"{path} has no ADC rows to re-measure")
    load = os.getloadavg()[0]
    rows = []
    for (protocol, bits), a in cells.items():
        rows += measure_adc(
            protocol,
            bits,
            (a["N"], a["M"], a["K"], a.get("d"), a["Q"], a.get("topk", 1000)),
            threads,
            repeats,
        )
    results["adc"] = rows
    results["meta"]["adc_remeasured"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "threads": sorted({1, threads}),
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }
    _save(results, out)
    print("\n".join(adc_throughput.summary_lines(rows)))
    return results


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the results dict (also written to ``--out``)."""
    args = parse_args(argv)
    if args.adc_only:
        return remeasure_adc(Path(args.out), args.threads, repeats=1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    workdir = runs_dir() / "bench" / ("quick" if args.quick else "full")
    t_start = time.perf_counter()
    results: dict = {
        "meta": {
            "quick": args.quick,
            "argv": list(sys.argv[1:] if argv is None else argv),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "cpu": cpu_description(),
            "load_before": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "git_commit": _git_commit(),
            "protocols": args.protocols,
            "bits": args.bits,
            "methods": args.methods,
            "seeds_at_II_32": args.seeds,
            "memory_method": "per method: psutil RSS sampled every 20 ms in a thread "
            "(peak and increase over the start); per protocol: ru_maxrss; one process",
            "notes": [
                "Seeds vary the training randomness only; splits and augmentation bank "
                "come from seed 0 for every method.",
                "Training time excludes the per-epoch validation; faiss baselines report "
                "their fit time as training time. The float baseline does not depend on "
                "the code length and is computed once per protocol.",
                f"faiss OPQ first rotates and reduces the features to {OPQ_D_OUT} "
                "dimensions (full-dimension OPQ takes minutes on 1280-d features).",
                "ADC ratios use random codes at the table's N, M, K; Lorentz tables "
                "(geodesic, arcosh) cost more to build than faiss's squared-L2 tables.",
            ],
        },
        "rows": [],
        "deltas": [],
        "adc": [],
        "protocols": {},
        "complete": False,
    }
    load = results["meta"]["load_before"]
    print(
        f"benchmark: {'quick' if args.quick else 'full'} mode, protocols {args.protocols}, "
        f"bits {args.bits}, {len(args.methods)} methods, {args.threads} thread(s), "
        f"load average {load:.2f} on {os.cpu_count()} CPUs -> {out}",
        flush=True,
    )
    if load > 0.75 * (os.cpu_count() or 1):
        print("  note: the machine is busy; timings will be pessimistic", flush=True)
    for protocol in args.protocols:
        _run_protocol(args, protocol, results, out, workdir)
        gc.collect()
    results["deltas"] = compute_deltas(results["rows"])
    results["meta"]["load_after"] = os.getloadavg()[0]
    results["meta"]["total_seconds"] = round(time.perf_counter() - t_start, 1)
    results["meta"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["complete"] = True
    _save(results, out)
    print()
    print(format_text(results))
    print()
    print("\n".join(adc_throughput.summary_lines(results["adc"])))
    print(
        f"total {results['meta']['total_seconds']:.0f} s, process peak RSS "
        f"{results['meta']['peak_rss_mb']:.0f} MB; wrote {out / 'results.json'} and "
        f"{out / 'results.md'}"
    )
    return results


def _run_protocol(args, protocol: str, results: dict, out: Path, workdir: Path) -> None:
    prepared: dict = {}
    proto_peak = 0.0
    info: dict = {}
    float_row = None
    for bits in args.bits:
        base = profile_config(
            protocol,
            bits,
            quick=args.quick,
            epochs=args.epochs,
            data=args.data,
            threads=args.threads,
            extra=args.overrides,
        )
        key = _prepare_key(base)
        if key not in prepared:
            prepared.clear()
            float_row = None
            gc.collect()
            print(f"[{protocol}] preparing features ({base.n_views}-view bank)...", flush=True)
            with RSSSampler() as mem:
                prep = prepare(base, progress=not args.quiet)
                q, db = prep.split("query"), prep.split("database")
                train_np = prep.feats[prep.rows(prep.splits.train)].float().numpy()
            proto_peak = max(proto_peak, mem.peak_mb)
            prepared[key] = (prep, q, db, train_np)
            results["meta"]["dataset"] = dataset_label(base, prep.dataset)
            info = {
                "n_train": len(prep.splits.train),
                "n_query": len(q.feats),
                "n_database": len(db.feats),
                "feature_dim": int(q.feats.shape[1]),
                "n_views": base.n_views,
                "prepare_seconds": {k: round(v, 1) for k, v in prep.timer.seconds.items()},
            }
            results["protocols"][protocol] = info
            print(
                f"[{protocol}] {info['n_train']} train / {info['n_query']} query / "
                f"{info['n_database']} database images; prepare "
                f"{sum(prep.timer.seconds.values()):.0f} s",
                flush=True,
            )
        prep, q, db, train_np = prepared[key]
        k = min(base.topk, len(db.feats))
        # ADC throughput at this cell's N, M, K: single-threaded and on --threads
        adc_q = 200 if args.quick else 1000
        results["adc"] += measure_adc(
            protocol,
            bits,
            (len(db.feats), base.M, base.K, base.feat_dim, min(adc_q, len(q.feats)), k),
            args.threads,
            1 if args.quick else 2,
        )
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
        for method in args.methods:
            m = METHODS[method]
            if method == "float":  # independent of the code length: once per protocol
                if float_row is None:
                    float_row = run_baseline(method, base.M, train_np, q, db, k)
                runs = [dict(float_row, shared_across_bits=True)]
            elif m.kind == "baseline":
                runs = [run_baseline(method, base.M, train_np, q, db, k)]
            else:
                if m.uses_hierarchy and base.epochs <= base.hierarchy_warmup:
                    print(
                        f"  warning: {base.epochs} epochs <= hierarchy_warmup "
                        f"{base.hierarchy_warmup}: {method}'s hierarchy losses never switch on",
                        flush=True,
                    )
                runs = []
                seeds = seeds_for(protocol, bits, method, args.seeds, tuple(args.seed_cells))
                for seed in seeds:
                    runs.append(run_learned(prep, base, method, seed, q, db, workdir))
                    r = runs[-1]
                    print(
                        f"[{protocol}/{bits}b] {method} seed {seed} ({len(runs)}/{len(seeds)}): "
                        f"mAP {r['map']:.4f} (epoch {r['val_selected_epoch']}), final "
                        f"{r['map_final']:.4f}, train {r['train_seconds']:.0f} s",
                        flush=True,
                    )
            agg = aggregate_runs(protocol, bits, method, runs)
            results["rows"].append(agg)
            proto_peak = max(proto_peak, agg["rss_peak_mb"])
            if m.kind == "baseline":
                print(
                    f"[{protocol}/{bits}b] {method}: mAP {agg['map']:.4f}, fit "
                    f"{agg['train_seconds']:.1f} s, {agg['search_qps']:.0f} q/s",
                    flush=True,
                )
            results["deltas"] = compute_deltas(results["rows"])
            info["process_peak_rss_mb"] = round(peak_rss_mb(), 1)
            info["sampled_peak_rss_mb"] = round(proto_peak, 1)
            info["under_8gb"] = bool(max(proto_peak, peak_rss_mb()) < MEMORY_BUDGET_MB)
            _save(results, out)
    prepared.clear()
    print(
        f"[{protocol}] peak RSS {info.get('process_peak_rss_mb', 0):.0f} MB (process), "
        f"{proto_peak:.0f} MB (sampled in this protocol); under 8 GB: {info.get('under_8gb')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
