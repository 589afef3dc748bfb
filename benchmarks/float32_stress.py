"""Float32 stress test: how many hard inputs give non-finite values or gradients.

Run: ``python -m benchmarks.float32_stress``

Inputs: tangent norms log-spaced from 1e-8 to 1e3, curvature parameters k log-spaced from
0.01 to 100, random directions; for each, ``expmap0`` then ``dist`` (to a different
point and to itself), ``logmap0`` and the Lorentz centroid, with gradients with respect
to the tangent vectors and to k. The same inputs go through plain geoopt
(``geoopt.manifolds.lorentz.math``, with a centroid written the same way), measured in
the same run, so the printed ratio compares like with like.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from geoopt.manifolds.lorentz import math as gmath

from hihpq_lib.geometry import lorentz as L


def _centroid_plain(x, w, k):
    a = w @ x
    return torch.sqrt(k) * a / torch.sqrt(-gmath.inner(a, a, keepdim=True))


def _ours(v, k):
    x = L.expmap0(L.lift(v), k=k)
    w = torch.full((1, v.shape[0]), 1.0 / v.shape[0])
    return {
        "dist": L.dist(x, x.roll(1, 0), k=k),
        "dist(x, x)": L.dist(x, x, k=k),
        "logmap0": L.logmap0(x, k=k),
        "centroid": L.lorentz_centroid(x, w, k=k),
    }


def _geoopt(v, k):
    x = gmath.expmap0(L.lift(v), k=k)
    w = torch.full((1, v.shape[0]), 1.0 / v.shape[0])
    return {
        "dist": gmath.dist(x, x.roll(1, 0), k=k),
        "dist(x, x)": gmath.dist(x, x, k=k),
        "logmap0": gmath.logmap0(x, k=k),
        "centroid": _centroid_plain(x, w, k),
    }


def stress(fn, norms, ks, n_points=4, dim=3, seed=0):
    """Count (cases, non-finite cases) per function; a case is finite when the value and
    the gradients with respect to v and k are all finite."""
    g = torch.Generator().manual_seed(seed)
    counts: dict[str, list[int]] = {}
    for n in norms:
        for kv in ks:
            v = torch.randn(n_points, dim, generator=g)
            v = (v / v.norm(dim=-1, keepdim=True) * float(n)).requires_grad_(True)
            k = torch.tensor(float(kv), requires_grad=True)
            with torch.autograd.set_detect_anomaly(False):
                outs = fn(v, k)
            for name, out in outs.items():
                v.grad, k.grad = None, None
                ok = bool(torch.isfinite(out).all())
                try:
                    out.sum().backward(retain_graph=True)
                    ok = ok and bool(torch.isfinite(v.grad).all()) and bool(torch.isfinite(k.grad))
                except RuntimeError:
                    ok = False
                c = counts.setdefault(name, [0, 0])
                c[0] += 1
                c[1] += not ok
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--norms", type=int, default=45, help="number of tangent norms in [1e-8, 1e3]")
    ap.add_argument("--ks", type=int, default=17, help="number of k values in [0.01, 100]")
    args = ap.parse_args(argv)
    norms = np.logspace(-8, 3, args.norms)
    ks = np.logspace(-2, 2, args.ks)
    ours, plain = stress(_ours, norms, ks), stress(_geoopt, norms, ks)
    print(f"float32, {len(norms)} norms x {len(ks)} curvatures x 4 points, value + gradients")
    print(f"{'function':<12} {'cases':>6} {'hihpq non-finite':>17} {'geoopt non-finite':>18}")
    tot = [0, 0, 0]
    for name in ours:
        c, b = ours[name]
        _, pb = plain[name]
        tot[0] += c
        tot[1] += b
        tot[2] += pb
        print(f"{name:<12} {c:>6} {b:>17} {pb:>18}")
    print(f"{'total':<12} {tot[0]:>6} {tot[1]:>17} {tot[2]:>18}")
    print(f"non-finite fraction: hihpq {tot[1] / tot[0]:.4f}, geoopt {tot[2] / tot[0]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
