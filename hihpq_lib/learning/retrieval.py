"""Scoring a model on features: PQ search of queries against an encoded database, and its
mAP@K at one or several label levels (the validation mAP of training, the test mAP of
:func:`hihpq_lib.app.scoring.evaluate_run`)."""

from __future__ import annotations

import torch

from hihpq_lib.evaluation.metrics import map_at_k, map_at_k_levels, map_levels_from_distances
from hihpq_lib.learning.model import HiHPQModel
from hihpq_lib.learning.views import FeatureSplit

__all__ = ["search_topk", "evaluate_map", "evaluate_levels"]


@torch.no_grad()
def search_topk(
    model: HiHPQModel,
    query_feats: torch.Tensor,
    db_feats: torch.Tensor,
    topk: int,
    symmetric: bool = False,
) -> torch.Tensor:
    """``(Q, k)`` database rows of the PQ search (``db_feats`` encoded, queries raw)."""
    device = model.quantizer.codebooks.device
    index = model.build_index(db_feats.to(device))
    k = min(int(topk), len(db_feats))
    mode = "symmetric" if symmetric else "asymmetric"
    _, idx = index.search(model.points(query_feats.to(device)), k, mode=mode)
    return idx.cpu()


@torch.no_grad()
def evaluate_map(
    model: HiHPQModel,
    query: FeatureSplit,
    database: FeatureSplit,
    topk: int,
    symmetric: bool = False,
    *,
    ties: str = "index",
) -> float:
    """mAP@K of asymmetric (or symmetric) PQ search: ``database`` encoded, ``query`` raw
    (``ties``: as in :func:`evaluate_levels`)."""
    if ties != "index":
        levels = {"map": (query.labels, database.labels)}
        return evaluate_levels(
            model, query.feats, database.feats, levels, topk, symmetric, ties=ties
        )["map"]
    idx = search_topk(model, query.feats, database.feats, topk, symmetric)
    return map_at_k(query.labels, database.labels, idx)


@torch.no_grad()
def evaluate_levels(
    model: HiHPQModel,
    query_feats: torch.Tensor,
    db_feats: torch.Tensor,
    levels: dict,
    topk: int,
    symmetric: bool = False,
    *,
    ties: str = "index",
) -> dict[str, float]:
    """mAP@K of one PQ search judged at every level of ``levels`` (name -> (query labels,
    database labels)), e.g. the class and the ancestors at chosen depths.

    ``ties="index"`` (default, the committed numbers): tied distances in database order;
    ``"expected"``: every AP averaged over all orders of the tied items, from all the
    distances, a chunk of queries at a time
    (:func:`~hihpq_lib.evaluation.metrics.map_levels_from_distances`)."""
    if ties == "index":
        return map_at_k_levels(search_topk(model, query_feats, db_feats, topk, symmetric), levels)
    index = model.build_index(db_feats.to(model.quantizer.codebooks.device))
    points = model.points(query_feats.to(model.quantizer.codebooks.device))
    mode = "symmetric" if symmetric else "asymmetric"
    dist = lambda s, e: index.distances(points[s:e], mode=mode).cpu()  # noqa: E731
    k = min(int(topk), len(db_feats))
    return map_levels_from_distances(dist, levels, k, ties=ties, chunk_size=512)
