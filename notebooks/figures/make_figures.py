"""Regenerate the README's pictures: one thumbnail per notebook and the demo's disks.

Run from the repository root after ``make demo`` (it reads ``runs/demo``) and, for the
notebook 07 thumbnail, after ``make bench`` (``benchmarks/results``)::

    .venv/bin/python notebooks/figures/make_figures.py

Every picture is drawn by the same ``hihpq_lib.viz`` function the notebooks call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch

from hihpq_lib import viz
from hihpq_lib.geometry import lorentz as L
from hihpq_lib.utils.runtime import project_dir, runs_dir

OUT = project_dir() / "notebooks" / "figures"


def save(fig, name: str, width_in: float = 4.0) -> Path:
    w, h = fig.get_size_inches()
    fig.set_size_inches(width_in, width_in * h / w)
    path = OUT / name
    fig.savefig(path, dpi=80, bbox_inches="tight")
    fig.clf()
    print("wrote", path)
    return path


def main() -> None:
    g = torch.Generator().manual_seed(0)
    # 01: points on the hyperboloid and the same points on the Poincaré disk
    v = torch.randn(40, 2, generator=g, dtype=torch.float64) * 0.9
    pts = L.expmap0(L.lift(v), k=1.0)
    save(viz.hyperboloid_and_disk(pts, 1.0, backend="matplotlib", title=None), "01_thumb.png", 5)
    # 02: geodesic grid (distances grow toward the boundary)
    save(viz.geodesic_grid(1.0, backend="matplotlib", title=None), "02_thumb.png")
    # 03: Voronoi cells of a hyperbolic codebook
    cw = L.expmap0(L.lift(torch.randn(8, 2, generator=g, dtype=torch.float64)), k=1.0)
    save(
        viz.codebook_voronoi(cw, 1.0, backend="matplotlib", title=None, resolution=120),
        "03_thumb.png",
    )
    demo = runs_dir() / "demo"
    if (demo / "metrics.jsonl").is_file():
        hist = [json.loads(line) for line in (demo / "metrics.jsonl").read_text().splitlines()]
        ep = np.array([h["epoch"] for h in hist])
        fig = viz.line_plot(
            ep,
            [np.array([h["loss"] for h in hist]), np.array([h["contrastive"] for h in hist])],
            ["total loss", "contrastive"],
            xlabel="epoch",
            ylabel="loss",
            title=None,
            ylim=None,
            backend="matplotlib",
        )
        save(fig, "04_thumb.png")
        vals = [h.get("val_map", np.nan) for h in hist]
        fig = viz.line_plot(
            ep,
            [np.array(vals)],
            ["validation mAP@1000"],
            xlabel="epoch",
            ylabel="mAP",
            title=None,
            ylim=None,
            backend="matplotlib",
        )
        save(fig, "05_thumb.png")
        for src, dst in (
            ("retrieval_grid.png", "06_thumb.png"),
            ("poincare_disks.png", "poincare_disks.png"),
        ):
            if (demo / src).is_file():
                shutil.copyfile(demo / src, OUT / dst)
                print("copied", OUT / dst)


if __name__ == "__main__":
    main()
