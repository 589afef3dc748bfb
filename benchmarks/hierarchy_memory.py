"""Peak memory and time of the tangent-space Ward hierarchy, scalable vs exact.

Run: ``python -m benchmarks.hierarchy_memory [--n 50000] [--dim 64]``

Each configuration runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its
own. Exact Ward is measured on a subsample (it needs ~8 N^2 / 2 bytes) and its memory
at full N is printed as scipy's condensed-matrix size, the part that dominates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
from hihpq_lib.learning.hierarchy import TangentWardHierarchy
n, dim, method, n_anchors = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = np.random.default_rng(0)
centres = rng.normal(size=(100, dim)) * 3
x = (centres[rng.integers(0, 100, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
h = TangentWardHierarchy(n_clusters=(100, 50, 25), method=method, n_anchors=n_anchors).fit(x)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "method": method, "seconds": sec, "peak_rss_mb": peak / 1024,
                  "rss_before_fit_mb": base / 1024, "n_clusters": h.n_clusters_}))
"""


def run(n, dim, method, n_anchors):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(dim), method, str(n_anchors)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--n-anchors", type=int, default=2000)
    ap.add_argument("--exact-n", type=int, default=10000)
    args = ap.parse_args(argv)
    scal = run(args.n, args.dim, "scalable", args.n_anchors)
    exact = run(args.exact_n, args.dim, "exact", args.n_anchors)
    full_exact_gb = 8 * args.n * (args.n - 1) / 2 / 1e9
    print(f"{'method':<10} {'N':>7} {'seconds':>8} {'peak RSS (MB)':>14}")
    for r in (scal, exact):
        print(f"{r['method']:<10} {r['n']:>7} {r['seconds']:>8.1f} {r['peak_rss_mb']:>14.0f}")
    print(f"exact Ward at N={args.n}: condensed distance matrix alone {full_exact_gb:.1f} GB")
    print(
        f"ratio scalable peak / exact-at-N matrix: {scal['peak_rss_mb'] / 1e3 / full_exact_gb:.3f}"
    )
    print(f"scalable within 4 GB: {scal['peak_rss_mb'] < 4096}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
