"""ADC search throughput: our :class:`~hihpq_lib.quantization.index.PQIndex` against faiss ``IndexPQ``.

Run: ``python -m benchmarks.adc_throughput [--n 50000 500000] [--m 4] [--topk 10 100 1000]
[--threads 1 2] [--to-faiss-n 1000000 10000000] [--json F] [--md F]``
(``--quick``: N = 50,000 only, 200 queries, one repeat).

The default grid is the sweep over ``k`` x ``N`` x threads at ``M = 4`` (32 bits).
``--to-faiss-n`` adds :func:`to_faiss_rows`: :meth:`PQIndex.to_faiss` on larger synthetic
databases, its recall against our exact search and both throughputs, and the memory
per image.

Both indexes hold the **same** random codes ``(N, M) uint8`` with ``K = 256`` codewords
per subspace and answer the same ``Q`` queries for the ``topk`` nearest items
(asymmetric distance computation: one ``M x K`` table per query, then ``M`` lookups per
database item, then a top-k selection). Three searchers are timed in the same run:

* ``faiss`` — ``faiss.IndexPQ`` (squared-L2 tables, C++ scan with a heap per query);
* ``ours (lorentz)`` — ``PQIndex(geometry="lorentz")``: geodesic-distance tables on
  hyperboloids (what HiHPQ searches with), computed with ``arcosh``;
* ``ours (euclidean)`` — ``PQIndex(geometry="euclidean")``: squared-L2 tables, the
  apples-to-apples line (same arithmetic as faiss; its top-10 agrees with faiss's).

Table construction differs between the first two (geodesic vs squared L2; sub-points of
``d/M + 1`` vs ``d/M`` coordinates); the lookup-and-select part is the same work. The
``table share`` column says how much of our Lorentz search time is table construction.

Threads: ``torch.set_num_threads(t)`` and ``faiss.omp_set_num_threads(t)`` for each
``t`` in ``--threads``. Throughput is queries per second, the best of ``--repeats``
timed runs after a warm-up (the best run is the least disturbed by other processes).
The ratio ``ours/faiss`` below 1 means our search is **slower** than faiss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import torch

from hihpq_lib.geometry import lorentz
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.utils.runtime import cpu_description

__all__ = [
    "AdcProblem",
    "make_problem",
    "compare",
    "to_faiss_rows",
    "format_rows",
    "format_faiss_rows",
    "summary_lines",
    "markdown",
    "main",
]


class AdcProblem:
    """Random codewords, codes and queries shared by every searcher.

    Attributes
    ----------
    centroids : (M, K, dsub) float32 ndarray, Euclidean codewords (faiss layout).
    codes : (N, M) uint8 ndarray, database codes.
    queries : (Q, M, dsub) float32 ndarray, Euclidean query sub-vectors.
    """

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, queries: np.ndarray):
        self.centroids, self.codes, self.queries = centroids, codes, queries

    @property
    def N(self) -> int:  # noqa: N802 (PQ notation)
        return int(self.codes.shape[0])

    @property
    def M(self) -> int:  # noqa: N802
        return int(self.codes.shape[1])

    @property
    def K(self) -> int:  # noqa: N802
        return int(self.centroids.shape[1])

    @property
    def dsub(self) -> int:
        return int(self.centroids.shape[2])

    @property
    def Q(self) -> int:  # noqa: N802
        return int(self.queries.shape[0])


def make_problem(N: int, M: int, K: int = 256, d: int | None = None, Q: int = 1000, seed: int = 0):  # noqa: N803
    """Random codes ``(N, M)``, codewords ``(M, K, d/M)`` and queries ``(Q, M, d/M)``.

    ``d`` defaults to ``16 * M`` (the CPU profiles: 16 bits -> 32-d, 32 -> 64-d, 64 -> 128-d).
    Codewords and queries are Gaussian with standard deviation ``0.5 / sqrt(d/M)``, so the
    Lorentz versions (``expmap0`` of the same vectors) lie well inside HiHPQ's clip radius.
    """
    d = 16 * M if d is None else int(d)
    for name, v in (("N", N), ("M", M), ("Q", Q), ("d", d)):
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if d % M:
        raise ValueError(f"d={d} is not divisible by M={M}; pick d as a multiple of M")
    if not (2 <= K <= 256 and K & (K - 1) == 0):
        raise ValueError(f"K must be a power of two in [2, 256] (uint8 codes), got {K}")
    rng = np.random.default_rng(seed)
    dsub = d // M
    scale = 0.5 / math.sqrt(dsub)
    centroids = (rng.standard_normal((M, K, dsub)) * scale).astype(np.float32)
    codes = rng.integers(0, K, size=(N, M), dtype=np.uint8)
    queries = (rng.standard_normal((Q, M, dsub)) * scale).astype(np.float32)
    return AdcProblem(centroids, codes, queries)


def faiss_index(problem: AdcProblem) -> faiss.IndexPQ:
    """A ``faiss.IndexPQ`` holding ``problem``'s codewords and codes (no training).

    Only ``K = 256`` (one byte per code, faiss's unpacked layout) is supported.
    """
    M, K, dsub = problem.centroids.shape
    if K != 256:
        raise ValueError(f"faiss_index supports K = 256 (byte codes) only, got K = {K}")
    index = faiss.IndexPQ(M * dsub, M, int(math.log2(K)))
    faiss.copy_array_to_vector(problem.centroids.ravel(), index.pq.centroids)
    index.is_trained = True
    index.add_sa_codes(np.ascontiguousarray(problem.codes))
    if index.ntotal != problem.N:
        raise RuntimeError(f"faiss index holds {index.ntotal} codes, expected {problem.N}")
    return index


def ours_index(problem: AdcProblem, geometry: str) -> tuple[PQIndex, torch.Tensor]:
    """Our ``PQIndex`` with ``problem``'s codes, and the matching query points.

    ``geometry="euclidean"``: the same codewords and queries as faiss. ``"lorentz"``: the
    codewords and queries mapped onto the hyperboloid by ``expmap0`` (curvature 1).
    """
    cw = torch.from_numpy(problem.centroids)
    q = torch.from_numpy(problem.queries)
    if geometry == "lorentz":
        cw = lorentz.expmap0(lorentz.lift(cw))
        q = lorentz.expmap0(lorentz.lift(q))
        index = PQIndex(cw, torch.ones(problem.M), geometry="lorentz")
    elif geometry == "euclidean":
        index = PQIndex(cw, geometry="euclidean")
    else:
        raise ValueError(f"geometry must be 'lorentz' or 'euclidean', got {geometry!r}")
    index.add(torch.from_numpy(problem.codes))
    return index, q


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def compare(
    N: int,  # noqa: N803
    M: int,  # noqa: N803
    K: int = 256,  # noqa: N803
    d: int | None = None,
    Q: int = 1000,  # noqa: N803
    topk: int = 1000,
    threads: int = 1,
    repeats: int = 2,
    seed: int = 0,
) -> dict:
    """Time faiss ``IndexPQ`` and our ``PQIndex`` (Lorentz and Euclidean) on one problem.

    Parameters
    ----------
    N, M, K : database size, subspaces, codewords per subspace.
    d : total query dimension (default ``16 * M``).
    Q : queries; topk : neighbours per query (clipped to N).
    threads : torch and faiss threads for this measurement (restored afterwards).
    repeats : timed runs per searcher (the best is kept), after one warm-up.

    Returns
    -------
    dict with the sizes, ``faiss_qps``, ``lorentz_qps``, ``euclidean_qps`` (queries/s),
    ``ratio_lorentz`` and ``ratio_euclidean`` (ours / faiss; > 1 means ours is faster),
    ``lorentz_table_share`` (fraction of our Lorentz search time spent building the
    geodesic tables) and ``top10_agreement`` (mean overlap of the top-10 of our
    Euclidean search and faiss's on up to 100 queries; ~1.0 shows they compute the same).
    """
    problem = make_problem(N, M, K, d, Q, seed)
    topk = min(int(topk), N)
    old_torch, old_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        fx = faiss_index(problem)
        q_flat = np.ascontiguousarray(problem.queries.reshape(Q, -1))
        warm = min(Q, 16)
        fx.search(q_flat[:warm], topk)
        t_faiss = _best_time(lambda: fx.search(q_flat, topk), repeats)
        _, f_idx = fx.search(q_flat[: min(Q, 100)], min(10, topk))
        row = {"N": N, "M": M, "K": K, "d": problem.M * problem.dsub, "Q": Q, "topk": topk}
        row["threads"] = threads
        row["faiss_qps"] = Q / t_faiss
        for geometry in ("lorentz", "euclidean"):
            index, qp = ours_index(problem, geometry)
            index.search(qp[:warm], topk)
            t = _best_time(lambda index=index, qp=qp: index.search(qp, topk), repeats)
            row[f"{geometry}_qps"] = Q / t
            row[f"ratio_{geometry}"] = t_faiss / t
            if geometry == "lorentz":
                t_tab = _best_time(lambda index=index, qp=qp: index.subspace_distances(qp), 1)
                row["lorentz_table_share"] = min(1.0, t_tab / t)
            else:
                _, o_idx = index.search(qp[: min(Q, 100)], min(10, topk))
                o_idx = o_idx.numpy()
                overlap = [
                    len(set(a.tolist()) & set(b.tolist())) / len(a)
                    for a, b in zip(o_idx, f_idx, strict=True)
                ]
                row["top10_agreement"] = float(np.mean(overlap))
    finally:
        torch.set_num_threads(old_torch)
        faiss.omp_set_num_threads(old_faiss)
    return row


def to_faiss_rows(
    N: int,  # noqa: N803
    M: int = 4,  # noqa: N803
    Q: int = 100,  # noqa: N803
    topks: tuple[int, ...] = (10, 100),
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 1,
    seed: int = 0,
) -> list[dict]:
    """:meth:`PQIndex.to_faiss` on ``N`` synthetic codes: recall, throughput, memory.

    For each metric (``"sqlorentz"``: faiss exact; ``"geodesic"``: faiss candidates
    re-ranked by our tables, ``max(4k, k + 100)`` of them) and each ``topk``: the recall
    of the faiss result against our exact search (``|faiss top-k & ours| / k``, mean
    over ``Q`` queries), both throughputs (queries/s, best of ``repeats`` after a
    warm-up) on each thread count, and the bytes per image of both indexes (codes only;
    the codebooks are shared and tiny).
    """
    problem = make_problem(N, M, 256, None, Q, seed)
    old_torch, old_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    rows = []
    try:
        for metric in ("sqlorentz", "geodesic"):
            base, qp = ours_index(problem, "lorentz")
            index = PQIndex(base.codewords, base.k, geometry="lorentz", metric=metric)
            index.add(base.codes)
            fx = index.to_faiss()
            for topk in topks:
                for t in threads:
                    torch.set_num_threads(t)
                    faiss.omp_set_num_threads(t)
                    ours = index.search(qp, topk)
                    got = fx.search(qp, topk)
                    t_ours = _best_time(lambda i=index, k=topk, q=qp: i.search(q, k), repeats)
                    t_faiss = _best_time(lambda f=fx, k=topk, q=qp: f.search(q, k), repeats)
                    recall = float(
                        np.mean(
                            [
                                len(set(a.tolist()) & set(b.tolist())) / topk
                                for a, b in zip(ours[1], got[1], strict=True)
                            ]
                        )
                    )
                    rows.append(
                        {
                            "N": N,
                            "M": M,
                            "Q": Q,
                            "metric": metric,
                            "topk": topk,
                            "threads": t,
                            "faiss_exact": fx.exact,
                            "recall": recall,
                            "same_order": float((ours[1] == got[1]).float().mean()),
                            "max_abs_dist_diff": float((ours[0] - got[0]).abs().max()),
                            "ours_qps": Q / t_ours,
                            "to_faiss_qps": Q / t_faiss,
                            "bytes_per_image_ours": index.memory_bytes(include_codebooks=False) / N,
                            "bytes_per_image_faiss": fx.index.sa_code_size(),
                        }
                    )
                    print(format_faiss_rows(rows[-1:]).splitlines()[1], flush=True)
            del fx, index, base
    finally:
        torch.set_num_threads(old_torch)
        faiss.omp_set_num_threads(old_faiss)
    return rows


def format_faiss_rows(rows: list[dict]) -> str:
    """Plain-text table of :func:`to_faiss_rows` rows."""
    head = (
        f"{'N':>9} {'metric':>9} {'topk':>5} {'thr':>3} {'recall':>7} {'same order':>10} "
        f"{'ours q/s':>9} {'faiss q/s':>9} {'B/img ours':>10} {'B/img faiss':>11}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['N']:>9} {r['metric']:>9} {r['topk']:>5} {r['threads']:>3} "
            f"{r['recall']:>7.4f} {r['same_order']:>10.4f} {r['ours_qps']:>9.0f} "
            f"{r['to_faiss_qps']:>9.0f} {r['bytes_per_image_ours']:>10.1f} "
            f"{r['bytes_per_image_faiss']:>11}"
        )
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    """The results as Markdown: how they were measured, the sweep, the to_faiss table."""
    meta = payload["meta"]
    out = [
        "# ADC search throughput: `PQIndex` vs faiss `IndexPQ`",
        "",
        f"- command: `{meta['command']}`",
        f"- date (UTC): {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- load average before / after: {payload['load_before']:.2f} / "
        f"{payload['load_after']:.2f}. {meta.get('note', '')}",
        "",
        "Same random codes (K = 256) and queries for every searcher; queries/s is the best of "
        "the timed runs after a warm-up; ratio = ours / faiss measured in the same run "
        "(> 1: ours faster). *ours (lorentz)* is the full HiHPQ search: geodesic tables on "
        "products of hyperboloids plus the compiled scan; *ours (eucl.)* uses squared-L2 "
        "tables like faiss.",
        "",
        "| N | M | top k | threads | faiss q/s | ours (lorentz) q/s | ratio | "
        "ours (eucl.) q/s | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        out.append(
            f"| {r['N']:,} | {r['M']} | {r['topk']} | {r['threads']} | {r['faiss_qps']:,.0f} | "
            f"{r['lorentz_qps']:,.0f} | {r['ratio_lorentz']:.2f} | {r['euclidean_qps']:,.0f} | "
            f"{r['ratio_euclidean']:.2f} |"
        )
    if payload.get("to_faiss"):
        out += [
            "",
            "## `PQIndex.to_faiss()`",
            "",
            "Recall = mean |faiss top-k ∩ our exact top-k| / k; *same order* = fraction of "
            "positions holding the same item. `sqlorentz` is an exact inner-product PQ "
            "search in faiss; `geodesic` re-ranks faiss's max(4k, k + 100) candidates with "
            "our tables. Bytes per image: the codes (the codebooks are shared).",
            "",
            "| N | metric | top k | threads | recall | same order | ours q/s | to_faiss q/s | "
            "bytes/image (ours, faiss) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in payload["to_faiss"]:
            out.append(
                f"| {r['N']:,} | {r['metric']} | {r['topk']} | {r['threads']} | "
                f"{r['recall']:.4f} | {r['same_order']:.4f} | {r['ours_qps']:,.0f} | "
                f"{r['to_faiss_qps']:,.0f} | {r['bytes_per_image_ours']:.0f}, "
                f"{r['bytes_per_image_faiss']} |"
            )
    return "\n".join(out) + "\n"


def format_rows(rows: list[dict]) -> str:
    """Plain-text table of :func:`compare` rows."""
    head = (
        f"{'N':>8} {'M':>2} {'K':>4} {'Q':>6} {'topk':>5} {'thr':>3} {'faiss q/s':>10} "
        f"{'lorentz q/s':>11} {'eucl q/s':>10} {'lor/faiss':>9} {'euc/faiss':>9} "
        f"{'table share':>11} {'top10 agree':>11}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['N']:>8} {r['M']:>2} {r['K']:>4} {r['Q']:>6} {r['topk']:>5} {r['threads']:>3} "
            f"{r['faiss_qps']:>10.0f} {r['lorentz_qps']:>11.0f} {r['euclidean_qps']:>10.0f} "
            f"{r['ratio_lorentz']:>9.2f} {r['ratio_euclidean']:>9.2f} "
            f"{r['lorentz_table_share']:>11.2f} {r['top10_agreement']:>11.2f}"
        )
    return "\n".join(lines)


def summary_lines(rows: list[dict]) -> list[str]:
    """Plain statements of who is faster, per row (no rounding away of a slowdown)."""
    out = []
    for r in rows:
        for geometry in ("lorentz", "euclidean"):
            ratio = r[f"ratio_{geometry}"]
            if ratio >= 1.05:
                verdict = f"{ratio:.2f}x FASTER than faiss"
            elif ratio <= 0.95:
                verdict = f"{1 / ratio:.2f}x SLOWER than faiss"
            else:
                verdict = f"about as fast as faiss (ratio {ratio:.2f})"
            out.append(
                f"N={r['N']}, M={r['M']}, top {r['topk']}, {r['threads']} thread(s): "
                f"our {geometry} ADC search is {verdict}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table, the verdicts, and optionally write JSON."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[50000, 500000], help="database sizes")
    ap.add_argument("--m", type=int, nargs="+", default=[4], help="subspaces M")
    ap.add_argument("--k", type=int, default=256, help="codewords per subspace")
    ap.add_argument("--dim", type=int, default=None, help="query dimension (default 16*M)")
    ap.add_argument("--queries", type=int, default=1000, help="queries Q")
    ap.add_argument("--topk", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs (best kept)")
    ap.add_argument("--quick", action="store_true", help="N=50,000, 200 queries, 1 repeat")
    ap.add_argument(
        "--to-faiss-n",
        type=int,
        nargs="*",
        default=[],
        help="also measure PQIndex.to_faiss() at these database sizes (M = 4)",
    )
    ap.add_argument("--to-faiss-queries", type=int, default=100)
    ap.add_argument("--note", default="", help="free text stored with the results")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--md", type=Path, default=None, help="also write a Markdown table here")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.repeats = [50000], 200, 1
    for t in args.threads:
        if t < 1:
            ap.error(f"--threads must be >= 1, got {t}")
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} on {os.cpu_count()} CPUs" + _busy_note(load))
    rows = []
    for n in args.n:
        for m in args.m:
            for k in args.topk:
                for t in args.threads:
                    row = compare(n, m, args.k, args.dim, args.queries, k, t, args.repeats)
                    rows.append(row)
                    print(format_rows([row]).splitlines()[1], flush=True)
    print()
    print(format_rows(rows))
    print()
    print("\n".join(summary_lines(rows)))
    faiss_rows = []
    for n in args.to_faiss_n:
        faiss_rows += to_faiss_rows(n, 4, args.to_faiss_queries, threads=tuple(args.threads))
    if faiss_rows:
        print()
        print(format_faiss_rows(faiss_rows))
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f}" + _busy_note(load_after))
    payload = {
        "rows": rows,
        "to_faiss": faiss_rows,
        "load_before": load,
        "load_after": load_after,
        "meta": {
            "command": "python -m benchmarks.adc_throughput "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "machine": f"{cpu_description()}, {os.cpu_count()} CPUs, "
            f"{platform.platform()}, faiss {faiss.__version__}, torch {torch.__version__}",
            "note": args.note,
        },
    }
    for path, text in (
        (args.json, lambda: json.dumps(payload, indent=2)),
        (args.md, lambda: markdown(payload)),
    ):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text())
            os.replace(tmp, path)
    return 0


def _busy_note(load: float) -> str:
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        return " (machine busy: other processes compete, timings are pessimistic)"
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
