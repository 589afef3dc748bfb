"""The benchmark tables read against the paper: results files (``benchmarks/results``), rows,
ablation effects, the paper comparison and the reference-fidelity ablation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hihpq_lib.evaluation.stats import compute_deltas, paired_difference, std_text, verdict
from hihpq_lib.utils.runtime import results_dir

__all__ = [
    "ABLATIONS",
    "METHOD_ORDER",
    "PAPER_HIHPQ_MAP",
    "MECOQ_README_MAP",
    "load_benchmark_results",
    "load_benchmark_suite",
    "benchmark_rows",
    "paired_rows",
    "ablation_effects",
    "paper_comparison_rows",
    "fidelity_results_dir",
    "load_fidelity_results",
    "fidelity_rows",
]


#: The ablations of notebook 07, as config overrides on top of the HiHPQ profile (the same
#: definitions as ``benchmarks/run_all.py``'s ``METHODS``; a test keeps them in sync).
ABLATIONS: dict[str, tuple[str, ...]] = {
    "hihpq": (),
    "hihpq_no_hier": ("proto_weight=0", "instance_weight=0"),
    "euclidean_hier": ("geometry=euclidean",),
    "euclidean_cpq": ("geometry=euclidean", "proto_weight=0", "instance_weight=0"),
}


#: The order of a cell's rows in the tables: the untrained baselines, the learned
#: ablations, HiHPQ last (``benchmarks/run_all.py``'s order; methods it does not know go
#: just before HiHPQ, in the order they came).
METHOD_ORDER: tuple[str, ...] = (
    "float",
    "faiss_pq",
    "faiss_opq",
    "euclidean_cpq",
    "euclidean_hier",
    "hihpq_no_hier",
    "hihpq",
)


#: HiHPQ mAP@1000 on CIFAR-10 with the official code (VGG-16, 224 px, GPU), by
#: (protocol, bits), as re-run by others and supplied to this project.
PAPER_HIHPQ_MAP: dict[tuple[str, int], float] = {
    ("I", 16): 0.727,
    ("I", 32): 0.724,
    ("I", 64): 0.705,
    ("II", 16): 0.633,
    ("II", 32): 0.652,
    ("II", 64): 0.665,
}


#: MeCoQ (Wang et al., AAAI 2022) on CIFAR-10 protocol II, asymmetric distance, from its
#: own README (github.com/gimpong/AAAI22-MeCoQ, GTX 1080 Ti column), by (protocol, bits).
MECOQ_README_MAP: dict[tuple[str, int], float] = {
    ("II", 16): 0.628,
    ("II", 32): 0.641,
    ("II", 64): 0.651,
}


def _started(res: Mapping, path: Path) -> float:
    """When a results file's run started (``meta.started``, ISO 8601), in POSIX seconds;
    the file's modification time when it records none or one that does not parse."""
    stamp = res.get("meta", {}).get("started")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return path.stat().st_mtime


def _ranked_result_files(folder: str | Path | None) -> list[tuple[dict, Path]]:
    """Every readable ``results.json`` in ``folder`` and its subfolders, best first.

    Best: complete over interrupted runs, full over ``--quick`` runs, the top-level file
    over subfolders, then the newest by the run's own start time (``meta.started``; the
    file's modification time where a file has none, so a fresh clone, whose files all
    carry the checkout's time, ranks them as the machine that ran them did), ties by path.
    A file that does not parse (being written) is skipped.
    """
    root = Path(folder) if folder is not None else results_dir()
    ranked = []
    for p in [root / "results.json", *sorted(root.glob("*/results.json"))]:
        if not p.is_file():
            continue
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError:  # a file being written: skip it
            continue
        rank = (
            not res.get("complete", False),
            bool(res.get("meta", {}).get("quick", False)),
            p.parent != root,
            -_started(res, p),
            str(p),
        )
        ranked.append((rank, res, p))
    ranked.sort(key=lambda t: t[0])
    return [(res, p) for _, res, p in ranked]


def load_benchmark_results(
    path: str | Path | None = None, *, folder: str | Path | None = None
) -> tuple[dict | None, Path | None]:
    """The benchmark results to read: ``path`` if given, else the best file in ``folder``.

    ``folder`` (default ``benchmarks/results``) holds ``results.json`` (``make bench``)
    and possibly subfolders with their own ``results.json`` (``--out``, ``--quick``
    writes ``quick/``). Preferred, in order: complete over interrupted runs, full over
    ``--quick`` runs, the top-level file over subfolders, then the newest.

    Returns
    -------
    (results dict, path read) or (None, None) when no file exists.
    """
    if path is not None:
        p = Path(path)
        return (json.loads(p.read_text()), p) if p.is_file() else (None, None)
    ranked = _ranked_result_files(folder)
    return ranked[0] if ranked else (None, None)


def load_benchmark_suite(folder: str | Path | None = None) -> tuple[dict | None, list[Path]]:
    """All protocols and methods of the benchmark in one results dict.

    ``make bench`` writes one folder per protocol (``protocol_i/``, ``protocol_ii/``);
    extra methods can be run into folders of their own. This reads every
    ``results.json`` in ``folder`` (default ``benchmarks/results``) and its subfolders,
    ranks them as :func:`load_benchmark_results` does (complete, then full over
    ``--quick``, then top level, then newest), and for each protocol:

    * the best file with that protocol and HiHPQ rows (else the best file with that
      protocol) is its **primary**: its rows, deltas, ADC rows and protocol summary are
      kept whole;
    * lower-ranked files of the same kind (quick or full) add the rows of
      (bits, method) cells the primary lacks. Their ``HiHPQ − this`` comes from
      :func:`compute_deltas` against the primary's HiHPQ rows (as ``make bench``
      computes it within one file: paired where both ran the same several seeds).

    Returns
    -------
    (merged results, the files read) or (None, []) when no file exists. The merged
    dict has the keys of one results file; ``meta`` holds ``sources`` (one entry per
    protocol and file: path, start time, argv, quick, complete, methods, and the run's
    own ``seconds`` and ``peak_rss_mb`` from its ``meta``, ``None`` when not recorded) and
    ``quick`` (True if any source was).
    """
    ranked = _ranked_result_files(folder)
    protocols = sorted(
        {r["protocol"] for res, _ in ranked for r in res.get("rows", [])},
        key=lambda q: (len(q), q),  # I before II
    )
    if not protocols:
        return None, []
    merged: dict[str, Any] = {"rows": [], "deltas": [], "adc": [], "protocols": {}}
    sources, paths = [], []
    for protocol in protocols:
        files = [
            (res, p)
            for res, p in ranked
            if any(r["protocol"] == protocol for r in res.get("rows", []))
        ]
        # the primary holds the reference (HiHPQ) rows where any file does
        files.sort(
            key=lambda f: (
                not any(
                    r["protocol"] == protocol and r["method"] == "hihpq"
                    for r in f[0].get("rows", [])
                )
            )
        )
        primary_quick = bool(files[0][0].get("meta", {}).get("quick", False))
        have: set[tuple[int, str]] = set()
        for i, (res, p) in enumerate(files):
            meta = res.get("meta", {})
            if i > 0 and bool(meta.get("quick", False)) != primary_quick:
                continue
            rows = [
                r
                for r in res.get("rows", [])
                if r["protocol"] == protocol and (r["bits"], r["method"]) not in have
            ]
            if not rows:
                continue
            merged["rows"] += rows
            cells = {(r["bits"], r["method"]) for r in rows}
            if i == 0:
                merged["deltas"] += [d for d in res.get("deltas", []) if d["protocol"] == protocol]
                merged["adc"] += [a for a in res.get("adc", []) if a.get("protocol") == protocol]
                if protocol in res.get("protocols", {}):
                    merged["protocols"][protocol] = res["protocols"][protocol]
            else:  # HiHPQ − this for the added cells, against the primary's HiHPQ rows
                ref = [
                    r
                    for r in merged["rows"]
                    if r["protocol"] == protocol and r["method"] == "hihpq"
                ]
                merged["deltas"] += [
                    d for d in compute_deltas(ref + rows) if (d["bits"], d["method"]) in cells
                ]
            have |= cells
            sources.append(
                {
                    "protocol": protocol,
                    "path": str(p),
                    "started": meta.get("started"),
                    "argv": meta.get("argv", []),
                    "quick": bool(meta.get("quick", False)),
                    "complete": bool(res.get("complete", False)),
                    "methods": sorted({m for _, m in cells}),
                    "bits": sorted({b for b, _ in cells}),
                    # the file's own preparation of this protocol (cache hit: seconds)
                    "prepare_seconds": res.get("protocols", {})
                    .get(protocol, {})
                    .get("prepare_seconds"),
                    # the file's own measurements: wall clock of the whole run and its peak
                    "seconds": meta.get("total_seconds"),
                    "peak_rss_mb": meta.get("peak_rss_mb"),
                }
            )
            paths.append(p)
    merged["meta"] = {"sources": sources, "quick": any(s["quick"] for s in sources)}
    merged["complete"] = all(s["complete"] for s in sources)
    return merged, list(dict.fromkeys(paths))


def benchmark_rows(results: Mapping, *, protocol: str | None = None, bits: int | None = None):
    """The benchmark's main table as plain rows (for ``metrics.format_table``).

    ``mAP`` is the validation-selected test mAP@1000, ``± std`` over seeds where several
    ran (:func:`~hihpq_lib.evaluation.stats.std_text`, 4 decimals); ``HiHPQ − this`` is the benchmark's (paired where possible) difference. Rows come
    cell by cell (protocol II first, then by code length), each cell's methods in
    :data:`METHOD_ORDER` (untrained baselines first, HiHPQ last), whichever merged file
    gave them.

    >>> rows = [{"protocol": p, "bits": b, "method": "faiss_pq", "label": "PQ", "map": 0.5,
    ...          "map_std": 0.0} for p, b in (("II", 32), ("I", 32), ("II", 16))]
    >>> [(r["protocol"], r["bits"]) for r in benchmark_rows({"rows": rows})]
    [('II', 16), ('II', 32), ('I', 32)]
    >>> two_files = [{**rows[0], "method": m, "label": m} for m in ("hihpq", "hihpq_no_hier")]
    >>> [r["method"] for r in benchmark_rows({"rows": two_files})]
    ['hihpq_no_hier', 'hihpq']
    >>> tight = {**rows[0], "n_seeds": 3, "map_std": 1.69e-05}
    >>> benchmark_rows({"rows": [tight]})[0]["± std"]
    '2e-05'
    """
    deltas = {(d["protocol"], d["bits"], d["method"]): d for d in results.get("deltas", [])}
    out = []
    last = METHOD_ORDER.index("hihpq")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    cells = sorted(
        results.get("rows", []),
        key=lambda r: (-len(r["protocol"]), r["bits"], order.get(r["method"], last - 0.5)),
    )
    for r in cells:
        if (protocol and r["protocol"] != protocol) or (bits and r["bits"] != bits):
            continue
        d = deltas.get((r["protocol"], r["bits"], r["method"]))
        n = r.get("n_seeds", 1)
        out.append(
            {
                "protocol": r["protocol"],
                "bits": r["bits"],
                "method": r["label"],
                "mAP": r["map"],
                "± std": std_text(r["map_std"], 4) if n > 1 else "",
                "seeds": n,
                "HiHPQ − this": "(ref)"
                if r["method"] == "hihpq"
                else (f"{d['delta_map']:+.4f}" if d else "—"),
            }
        )
    return out


#: The contrasts notebook 07 reads: (name, method a, method b) for ``mAP(a) - mAP(b)``.
CONTRASTS = (
    ("hyperbolic vs Euclidean, no hierarchy", "hihpq_no_hier", "euclidean_cpq"),
    ("hyperbolic vs Euclidean, with hierarchy", "hihpq", "euclidean_hier"),
    ("hierarchy losses, hyperbolic", "hihpq", "hihpq_no_hier"),
    ("hierarchy losses, Euclidean", "euclidean_hier", "euclidean_cpq"),
    ("OPQ vs PQ (faiss, no learning)", "faiss_opq", "faiss_pq"),
    ("HiHPQ vs faiss OPQ", "hihpq", "faiss_opq"),
)


def paired_rows(a: Mapping, b: Mapping) -> dict[str, float]:
    """:func:`~hihpq_lib.evaluation.stats.paired_difference` of two results rows.

    The difference is paired over the seeds both rows ran (their ``runs``) when there
    are at least two; otherwise it is the difference of the rows' ``map`` (the seed means)
    with ``n = 1``, ``se = 0`` and no error bar (``t95`` NaN).

    >>> a = {"map": 0.61, "runs": [{"seed": 0, "map": 0.60}, {"seed": 1, "map": 0.62}]}
    >>> b = {"map": 0.60, "runs": [{"seed": 0, "map": 0.59}, {"seed": 1, "map": 0.61}]}
    >>> d = paired_rows(a, b)
    >>> round(d["delta"], 4), d["se"], d["n"]
    (0.01, 0.0, 2)
    >>> paired_rows(a, {"map": 0.58})["n"]
    1
    """
    ra = {x["seed"]: x["map"] for x in a.get("runs", [])}
    rb = {x["seed"]: x["map"] for x in b.get("runs", [])}
    common = sorted(set(ra) & set(rb))
    if len(common) > 1:
        return paired_difference([ra[s] for s in common], [rb[s] for s in common])
    return paired_difference([float(a["map"])], [float(b["map"])])


def ablation_effects(results: Mapping, *, noise_std: float | None = None) -> list[dict]:
    """The benchmark's contrasts (:data:`CONTRASTS`) per (protocol, bits), with a verdict.

    Where both methods ran the same several seeds the difference is paired per seed
    (:func:`paired_difference`) and judged with Student's t. With one seed there is no
    error bar; for two learned methods (:data:`ABLATIONS`) ``noise_std``, the std of
    paired differences measured elsewhere (e.g. notebook 07's live seeds), stands in
    for it if given (``se = noise_std``, judged at 2 SE). faiss baselines keep "no error
    bar": their noise is not a training seed's.
    """
    cells = {}
    for r in results.get("rows", []):
        cells.setdefault((r["protocol"], r["bits"]), {})[r["method"]] = r
    out = []
    for (protocol, bits), cell in sorted(cells.items()):
        for name, a, b in CONTRASTS:
            if a not in cell or b not in cell:
                continue
            d = paired_rows(cell[a], cell[b])
            se, z, note = d["se"], d["t95"], ""
            if d["n"] == 1 and noise_std and a in ABLATIONS and b in ABLATIONS:
                # a single-seed difference varies like one paired difference: se = std
                se, z, note = float(noise_std), 2.0, " (SE from the live seeds)"
            out.append(
                {
                    "protocol": protocol,
                    "bits": bits,
                    "contrast": name,
                    "Δ mAP": round(d["delta"], 4),
                    "seeds": d["n"],
                    # one run and no stand-in: no error bar, so no SE ("—", not 0.0000)
                    "SE": round(se, 4) if d["n"] > 1 or note else "—",
                    "reading": verdict(d["delta"], se, z=z, n=None if note else d["n"]) + note,
                }
            )
    return out


def paper_comparison_rows(results: Mapping | None) -> list[dict]:
    """Paper numbers beside ours, one row per (protocol, bits).

    Columns: the HiHPQ official code (:data:`PAPER_HIHPQ_MAP`), MeCoQ's README
    (:data:`MECOQ_README_MAP`), and from ``results`` (may be None) our HiHPQ, our
    Euclidean contrastive PQ (the MeCoQ-like ablation) and the float features.
    """
    ours = {}
    for r in (results or {}).get("rows", []):
        ours[(r["protocol"], r["bits"], r["method"])] = r["map"]

    def fmt(v):
        return "—" if v is None else round(float(v), 3)

    rows = []
    for protocol, bits in sorted(PAPER_HIHPQ_MAP, key=lambda c: (len(c[0]), c[1])):
        rows.append(
            {
                "protocol": protocol,
                "bits": bits,
                "HiHPQ (official, VGG-16)": fmt(PAPER_HIHPQ_MAP.get((protocol, bits))),
                "MeCoQ (README)": fmt(MECOQ_README_MAP.get((protocol, bits))),
                "ours: HiHPQ": fmt(ours.get((protocol, bits, "hihpq"))),
                "ours: Euclidean CPQ": fmt(ours.get((protocol, bits, "euclidean_cpq"))),
                "ours: float features": fmt(ours.get((protocol, bits, "float"))),
            }
        )
    return rows


def fidelity_results_dir() -> Path:
    """The committed reference-fidelity ablation (``benchmarks/fidelity_ablation.py``):
    ``results_dir()/"fidelity"``, one folder per protocol and code length."""
    return results_dir() / "fidelity"


def load_fidelity_results(protocol: str = "II", bits: int = 32) -> dict | None:
    """The fidelity ablation's ``results.json`` for a cell, or ``None`` if not committed."""
    p = fidelity_results_dir() / f"protocol_{protocol.lower()}_{int(bits)}bits" / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def fidelity_rows(
    rows: Sequence[str] | None = None, protocol: str = "II", bits: int = 32
) -> list[str]:
    """Printable lines of the fidelity ablation: per row, HiHPQ test mAP (validation-selected
    epoch, mean ± std over seeds) and its paired change against ``current`` (our earlier
    behaviour), the validation mAP and its change, and the HiHPQ - Euclidean margin. One
    explanatory line when the table is not committed.

    >>> fidelity_rows(protocol="I", bits=48)
    ['no fidelity table committed for protocol I / 48 bits']
    """
    res = load_fidelity_results(protocol, bits)
    if res is None:
        return [f"no fidelity table committed for protocol {protocol} / {bits} bits"]
    out = []
    for s in res.get("summary", []):
        if rows is not None and s["row"] not in rows:
            continue
        h = s.get("lorentz")
        if not h:
            continue
        n = len(h["seeds"])
        line = f"{s['row']:27s} HiHPQ mAP {h['map'][0]:.4f} ± {h['map'][1]:.4f} ({n} seeds)"
        d = h.get("delta_map")
        if d:
            line += f", vs current {d['delta']:+.4f} ± {d['std']:.4f}"
        line += f"; val {h['val_map'][0]:.4f}"
        dv = h.get("delta_val")
        if dv:
            line += f" ({dv['delta']:+.4f} ± {dv['std']:.4f})"
        m = s.get("margin")
        if m:
            line += f"; HiHPQ - Euclidean {m['delta']:+.4f} ± {m['std']:.4f}"
        out.append(line)
    return out
