"""The README's benchmark table and the targets, read from the committed results.

Run: ``python -m benchmarks.summary [--results benchmarks/results]``

Reads every protocol's ``results.json`` under ``--results``
(:func:`~hihpq_lib.evaluation.benchmarks.load_benchmark_suite`) and prints, in Markdown:

* the main table: one row per method, one column per (protocol, bits), the
  validation-selected test mAP@1000 as ``mean ± std (n)`` where several seeds ran, and
  the paper's numbers (the official code re-run by others) as the last row;
* the targets, each with the figure that decides it: protocol II / 32 bits ≥ 0.62;
  HiHPQ ≥ faiss OPQ + 0.05; HiHPQ ≥ the float features; and the paper's ordering,
  HiHPQ above the Euclidean twin with the hierarchy losses and above HiHPQ without them,
  each by more than 2 standard errors of the paired seed difference (cells with one seed
  say "one seed: no error bar").

Nothing is typed in by hand: the README copies this output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hihpq_lib.evaluation.benchmarks import PAPER_HIHPQ_MAP, load_benchmark_suite, paired_rows
from hihpq_lib.evaluation.stats import std_text

__all__ = ["main_table", "targets", "main"]

#: Row order of the README table.
ORDER = (
    "hihpq",
    "euclidean_hier",
    "hihpq_no_hier",
    "euclidean_cpq",
    "faiss_pq",
    "faiss_opq",
    "float",
)

#: Protocol II / 32 bits: the issue's floor and the paper's level.
TARGET_II_32 = 0.62


def _cells(results: dict) -> tuple[list[tuple[str, int]], dict]:
    rows = {(r["protocol"], r["bits"], r["method"]): r for r in results.get("rows", [])}
    cells = sorted({(p, b) for p, b, _ in rows}, key=lambda c: (-len(c[0]), c[1]))  # II first
    return cells, rows


def _value(row: dict | None) -> str:
    if row is None:
        return "—"
    if row.get("n_seeds", 1) > 1:
        return f"{row['map']:.3f} ± {std_text(row['map_std'], 3)} ({row['n_seeds']})"
    return f"{row['map']:.3f}"


def main_table(results: dict) -> str:
    cells, rows = _cells(results)
    labels = {m: r["label"] for (_, _, m), r in rows.items()}
    head = "| method | " + " | ".join(f"{p} · {b} bits" for p, b in cells) + " |"
    lines = [head, "|---" * (len(cells) + 1) + "|"]
    for method in ORDER:
        if method not in labels:
            continue
        vals = [_value(rows.get((p, b, method))) for p, b in cells]
        if method == "hihpq":
            vals = [f"**{v}**" if v != "—" else v for v in vals]
        lines.append(f"| {labels[method]} | " + " | ".join(vals) + " |")
    paper = [PAPER_HIHPQ_MAP.get(c) for c in cells]
    lines.append(
        "| *paper, official code re-run by others (VGG-16, GPU)* | "
        + " | ".join("—" if v is None else f"*{v:.3f}*" for v in paper)
        + " |"
    )
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    """One entry per (target, cell): ``target``, ``cell``, ``figure`` (text), ``holds``."""
    cells, rows = _cells(results)
    out = []
    ii32 = rows.get(("II", 32, "hihpq"))
    if ii32 is not None:
        out.append(
            {
                "target": f"protocol II / 32 bits ≥ {TARGET_II_32}",
                "cell": "II · 32",
                "figure": _value(ii32),
                "holds": ii32["map"] >= TARGET_II_32,
            }
        )
    for cell in cells:
        name = f"{cell[0]} · {cell[1]}"
        h = rows.get((*cell, "hihpq"))
        if h is None:
            continue
        for other, margin, label in (
            ("faiss_opq", 0.05, "HiHPQ ≥ faiss OPQ + 0.05"),
            ("float", 0.0, "HiHPQ ≥ float features"),
        ):
            o = rows.get((*cell, other))
            if o is not None:
                gap = h["map"] - o["map"]
                out.append(
                    {
                        "target": label,
                        "cell": name,
                        "figure": f"{gap:+.3f}",
                        "holds": gap >= margin,
                    }
                )
        for other, label in (
            ("euclidean_hier", "HiHPQ > Euclidean + hierarchy by > 2 SE"),
            ("hihpq_no_hier", "HiHPQ > HiHPQ without hierarchy by > 2 SE"),
        ):
            if (*cell, other) not in rows:
                continue
            d = paired_rows(h, rows[(*cell, other)])
            if d["n"] < 2:
                figure, holds = f"{d['delta']:+.3f} (one seed: no error bar)", None
            else:
                figure = f"{d['delta']:+.3f} ± {d['se']:.3f} SE ({d['n']} seeds paired)"
                holds = d["delta"] > 2 * d["se"]
            out.append({"target": label, "cell": name, "figure": figure, "holds": holds})
    return out


def _verdict(holds) -> str:
    return "—" if holds is None else ("holds" if holds else "**does not hold**")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results")
    args = ap.parse_args(argv)
    results, paths = load_benchmark_suite(args.results)
    if results is None:
        where = args.results or "benchmarks/results"
        print(f"error: no results.json under {where}; run `make bench` first")
        return 2
    print(main_table(results))
    print()
    print("| target | cell | figure | verdict |")
    print("|---|---|---|---|")
    for t in targets(results):
        print(f"| {t['target']} | {t['cell']} | {t['figure']} | {_verdict(t['holds'])} |")
    print()
    print("Read from: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
