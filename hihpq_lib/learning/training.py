"""Training HiHPQ on cached backbone features (the CPU fast path).

One epoch, as in the reference (``engine.py``), with the augmentation bank standing in
for online augmentation; :func:`train` runs these steps, one function each:

1. after ``hierarchy_warmup`` epochs, cluster the tangent features of the clean
   training images (:class:`~hihpq_lib.learning.hierarchy.TangentWardHierarchy`) at each
   granularity of ``num_clusters`` (:func:`cluster_step`);
2. for each batch, pick two different augmented views of every image from the bank,
   quantize both, and minimise ``contrastive + proto_weight * prototype +
   instance_weight * instance`` (:class:`~hihpq_lib.learning.losses.HiHPQLoss`) with Riemannian
   SGD (geoopt), a linear warm-up and a cosine learning-rate decay per step
   (:func:`train_epoch`);
3. clamp the curvatures to their safe range after each step (also :func:`train_epoch`);
4. evaluate mAP@K on the **validation** queries against the validation database (never
   on the test queries, :func:`evaluate_epoch`), keep the best model (:func:`save_best`),
   append a line to ``metrics.jsonl`` and write a checkpoint atomically
   (:func:`save_checkpoint`).

After the last epoch, ``codebook_refine`` (not in the paper; 0 by default) runs Lloyd
iterations on the codebooks of the validation-selected and the final model and keeps each
refinement when that model's validation mAP does not fall (:func:`refine_saved`).

``resume=True`` continues from the last checkpoint and ends with the same metrics as an
uninterrupted run: every epoch draws its randomness from a generator seeded by
``(seed, epoch)``, and the checkpoint holds the model, the optimiser and the history.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import uuid
from pathlib import Path

import geoopt
import numpy as np
import torch
from tqdm.auto import tqdm

from hihpq_lib.learning.checkpoint import (
    BEST,
    CHECKPOINT,
    METRICS,
    PSEUDO_HIERARCHY,
    load_checkpoint,
    save_best,
    save_checkpoint,
    save_pseudo_hierarchy,
    write_metrics,
)
from hihpq_lib.learning.config import TrainConfig, config_differences, resolve_num_clusters
from hihpq_lib.learning.hierarchy import TangentWardHierarchy
from hihpq_lib.learning.losses import HiHPQLoss
from hihpq_lib.learning.model import HiHPQModel, build_model
from hihpq_lib.learning.retrieval import evaluate_map
from hihpq_lib.learning.schedule import LRSchedule, make_schedule, steps_per_epoch
from hihpq_lib.learning.views import BankViews, FeatureSplit, TrainingData
from hihpq_lib.utils.arrays import to_numpy
from hihpq_lib.utils.atomic import atomic_torch_save
from hihpq_lib.utils.runtime import in_notebook, progress_bar, thread_budget, use_threads

__all__ = [
    "uses_hierarchy",
    "trains_backbone",
    "clean_train_features",
    "cluster_step",
    "epoch_generator",
    "train_epoch",
    "evaluate_epoch",
    "open_run",
    "init_model",
    "make_loss",
    "refine_saved",
    "train",
]


def _make_optimizer(cfg: TrainConfig, model: HiHPQModel, backbone_params=()):
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    if backbone_params:
        groups.append({"params": list(backbone_params), "lr_scale": cfg.lr_backbone_scale})
    if cfg.optimizer == "rsgd":
        return geoopt.optim.RiemannianSGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, stabilize=1
        )
    return geoopt.optim.RiemannianAdam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def uses_hierarchy(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) clusters and trains with the hierarchy losses.

    After ``hierarchy_warmup`` epochs, when one of the hierarchy losses has a weight.
    """
    return bool(cfg.proto_weight or cfg.instance_weight) and epoch >= cfg.hierarchy_warmup


def trains_backbone(data: TrainingData) -> bool:
    """Whether the online backbone has trainable layers (its features then move)."""
    return data.online is not None and bool(data.online.trainable_parameters())


def clean_train_features(data: TrainingData) -> torch.Tensor:
    """Clean features ``(N, F)`` of the training images, for clustering.

    ``data.train``, or fresh ones through the backbone when it trains. ``data`` is not
    modified.
    """
    if trains_backbone(data):
        return data.online.clean(data.online.images)
    return data.train


def cluster_step(
    cfg: TrainConfig, model: HiHPQModel, train_feats: torch.Tensor, epoch: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Step 1 of an epoch: the pseudo hierarchy of the training images.

    Clusters the tangent features of ``train_feats`` (``(N, F)`` backbone features,
    ``cfg.cluster_input``) at each granularity of ``cfg.num_clusters`` with
    :class:`~hihpq_lib.learning.hierarchy.TangentWardHierarchy` (seeded by ``(cfg.seed, epoch)``).

    Returns
    -------
    labels : list of L tensors ``(N,)`` int64, the cluster of each image per level
    centroids : list of L tensors ``(C_l, M*d)``, the tangent centroids per level, in the
        codebooks' dtype; both on the model's device.
    """
    device = model.quantizer.codebooks.device
    feats = train_feats.float().to(device)
    tangent = to_numpy(model.tangent(feats, raw=cfg.cluster_input == "raw"), np.float64)
    hier = TangentWardHierarchy(
        n_clusters=tuple(cfg.num_clusters),
        method=cfg.cluster_method,
        n_anchors=cfg.cluster_anchors,
        random_state=cfg.seed * 1000 + epoch,
    ).fit(tangent)
    dtype = model.quantizer.codebooks.dtype
    labels = [torch.as_tensor(lab).to(device) for lab in hier.labels_]
    cents = [torch.as_tensor(c, dtype=dtype).to(device) for c in hier.centroids_]
    return labels, cents


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator an epoch draws its batches and views from, seeded by ``(seed, epoch)``.

    So a resumed run draws what an uninterrupted one would.
    """
    return torch.Generator().manual_seed(seed * 100003 + epoch)


def train_epoch(
    cfg: TrainConfig,
    model: HiHPQModel,
    views,
    optimizer: torch.optim.Optimizer,
    loss_fn: HiHPQLoss,
    schedule: LRSchedule,
    epoch: int,
    n_train: int,
    *,
    hierarchy: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    training_mode: bool = True,
    progress: bool = True,
) -> dict:
    """Steps 2-3 of an epoch: one pass over the training images in a random order.

    For each batch: two different views of every image (``views.sample``), both quantized,
    ``loss_fn`` on the soft quantizations (with the hierarchy losses when ``hierarchy``,
    the output of :func:`cluster_step`, is given), one optimiser step at the learning
    rate ``schedule`` gives for the step, then the curvatures clamped
    (:meth:`~hihpq_lib.geometry.manifolds.ProductSpace.project_parameters_`).

    Updates the model's and the optimiser's state (that is its job); reads ``cfg``.

    Returns
    -------
    dict with the mean ``loss``, ``contrastive``, ``prototype``, ``instance`` over the
    steps, and ``lr`` (of the first parameter group at the last step).

    Raises
    ------
    FloatingPointError when the loss stops being finite.
    """
    device = model.quantizer.codebooks.device
    gen = epoch_generator(cfg.seed, epoch)
    n_steps = steps_per_epoch(n_train, cfg.batch_size, cfg.drop_last)
    model.train(training_mode)
    perm = torch.randperm(n_train, generator=gen)
    sums = {"loss": 0.0, "contrastive": 0.0, "prototype": 0.0, "instance": 0.0}
    if getattr(loss_fn, "neighbour_weight", 0.0):
        sums["neighbour"] = 0.0
    # in a notebook only train()'s per-epoch line is printed: a per-step bar would be
    # saved as a frozen widget or as one stale line per step
    bar = progress_bar(
        range(n_steps),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress or in_notebook(),
        leave=False,
    )
    for step in bar:
        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x1, x2 = views.sample(idx, gen, training_mode)
        x1, x2 = x1.to(device), x2.to(device)
        lr = schedule(epoch * n_steps + step)
        for group in optimizer.param_groups:  # "shared": the reference sets every group
            group["lr"] = lr * (group["lr_scale"] if cfg.backbone_lr == "scaled" else 1.0)
        o1, o2 = model(x1), model(x2)
        if hierarchy is not None:
            labels, cents = hierarchy
            level_labels = [lab[idx.to(device)] for lab in labels]
            parts = loss_fn(o1.soft, o2.soft, level_labels, cents, teacher=x1)
        else:
            parts = loss_fn(o1.soft, o2.soft, teacher=x1)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        model.space.project_parameters_()
        for key in sums:
            sums[key] += float(parts[key].detach())
        if not math.isfinite(float(parts["loss"].detach())):
            raise FloatingPointError(
                f"loss became {float(parts['loss'])} at epoch {epoch + 1}, step {step}: "
                "lower lr, or check curvature / clip radius"
            )
    means = {key: value / n_steps for key, value in sums.items()}
    return {**means, "lr": optimizer.param_groups[0]["lr"]}


def evaluate_epoch(cfg: TrainConfig, model: HiHPQModel, data: TrainingData) -> float:
    """Step 4 of an epoch: validation mAP@``cfg.topk`` (model selection, never the test set).

    The validation queries against the validation database (:func:`evaluate_map`); when
    the online backbone trains, their features are recomputed from ``data.val_images``
    first. Leaves the model in eval mode; ``data`` is not modified.
    """
    model.eval()
    query, database = data.val_query, data.val_database
    if trains_backbone(data) and data.val_images is not None:
        query = FeatureSplit(data.online.clean(data.val_images[0]), query.labels)
        database = FeatureSplit(data.online.clean(data.val_images[1]), database.labels)
    return evaluate_map(model, query, database, cfg.topk, cfg.symmetric)


def open_run(cfg: TrainConfig, out_dir: str | Path, resume: bool) -> dict | None:
    """Validate ``cfg`` and create the run folder; return the checkpoint to resume from.

    ``None`` for a fresh run (``resume`` false, or no ``checkpoint.pt`` yet). Raises
    ``ValueError`` when the checkpoint was written with another configuration. (``cfg``
    was validated when it was made: :class:`~hihpq_lib.learning.config.TrainConfig`.)
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    ck = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None
    if ck is not None and config_differences(ck.get("config") or {}, cfg.to_dict()):
        raise ValueError(
            f"{ckpt_path} was written with another configuration; start a new run folder "
            "or drop --resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    return ck


def init_model(
    cfg: TrainConfig, data: TrainingData, device: torch.device, *, data_start: bool = True
) -> HiHPQModel:
    """The model ``cfg`` describes, seeded by ``cfg.seed``, float32, on ``device``.

    ``data_start=False`` skips the starts below that read the training features (a resumed
    run, whose checkpoint then overwrites every parameter they would set). They draw from
    their own seeded generators, not torch's global one, so skipping them leaves the rest of
    the run drawing what an uninterrupted run draws.

    With ``block_norm_power`` below 1 the :class:`~hihpq_lib.learning.model.BlockNorm`
    before the head is centred on the training features first, and the starts below read
    the features through it.
    With ``head_init="pca"`` the head starts at the training features' principal
    components (:meth:`~hihpq_lib.learning.model.ProjectionHead.init_pca_`).
    With ``codebook_init="kmeans"`` they start at the k-means centroids of every training
    image's tangent vectors (:meth:`~hihpq_lib.quantization.quantizer.ProductQuantizer.init_kmeans`).
    With ``codebook_init="data"`` the codewords start at the projected features of random
    training images (:meth:`~hihpq_lib.quantization.quantizer.ProductQuantizer.init_from_features`).
    """
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.train.shape[1]).to(torch.float32).to(device)
    if not data_start:
        return model
    if model.block_norm is not None:
        model.block_norm.fit_(data.train)
    if cfg.head_init in ("pca", "raw"):
        with torch.no_grad():
            start = torch.cat(
                [model.normalise(c.float().to(device)) for c in data.train.split(4096)]
            )
        model.head.init_pca_(start.cpu(), cfg.M, cfg.pca_norm, raw=cfg.head_init == "raw")
    if cfg.codebook_init == "data":
        with torch.no_grad():
            model.eval()
            init_gen = torch.Generator().manual_seed(cfg.seed)
            sample = data.train[: max(4096, cfg.K)].float().to(device)
            model.quantizer.init_from_features(model.project(sample), init_gen)
            model.train()
    elif cfg.codebook_init == "kmeans":
        with torch.no_grad():
            model.eval()
            feats = torch.cat([model.project(c.float().to(device)) for c in data.train.split(4096)])
            model.quantizer.init_kmeans(feats, seed=cfg.seed)
            model.train()
    return model


def make_loss(cfg: TrainConfig, model: HiHPQModel) -> HiHPQLoss:
    """The objective ``cfg`` describes over the model's product space."""
    return HiHPQLoss(
        model.space,
        tau=cfg.tau,
        proto_weight=cfg.proto_weight,
        instance_weight=cfg.instance_weight,
        prototype_mode=cfg.prototype_loss,
        instance_mode=cfg.instance_loss,
        neighbour_weight=cfg.neighbour_weight,
        neighbour_tau=cfg.neighbour_tau,
    )


def refine_saved(
    cfg: TrainConfig, model: HiHPQModel, data: TrainingData, path: str | Path, backbone=None
) -> dict | None:
    """After the last epoch: ``cfg.codebook_refine`` Lloyd iterations on the codebooks of
    a saved model (``best.pt``, the validation-selected one, or ``checkpoint.pt``, the
    final one), kept when its validation mAP does not fall.

    The model the file holds (in a copy of ``model``; with ``backbone``, the online
    backbone that trains, set to its state in the file meanwhile and put back after)
    encodes the clean training images (:func:`clean_train_features`);
    :meth:`~hihpq_lib.quantization.quantizer.ProductQuantizer.refine_` moves its codewords;
    the validation queries score it before and after (:func:`evaluate_epoch`). The file is
    rewritten with a ``refine`` record (and the refined model when kept), so a resumed run
    does not refine twice. Returns the record (``None`` when ``codebook_refine`` is 0 or
    the file is missing): iterations, codes changed per iteration, validation mAP before
    and after, ``kept``, seconds, and ``skipped`` (why) when there are fewer training
    images than codewords per codebook.
    """
    path = Path(path)
    if not cfg.codebook_refine or not path.is_file():
        return None
    saved = load_checkpoint(path)
    if "refine" in saved:  # refined before this run was resumed
        return saved["refine"]
    t0 = time.perf_counter()
    cand = copy.deepcopy(model)
    cand.load_state_dict(saved["model"])
    current = None
    if backbone is not None and saved.get("backbone") is not None:
        current = copy.deepcopy(backbone.state_dict())
        backbone.load_state_dict(saved["backbone"])
    skipped = None
    try:
        before = after = evaluate_epoch(cfg, cand, data)
        feats = clean_train_features(data)
        changed: list[int] = []
        if len(feats) < cand.quantizer.K:  # Lloyd needs a point per codeword
            skipped = f"{len(feats)} training images, fewer than the K={cand.quantizer.K} codewords"
        else:
            changed = cand.quantizer.refine_(cand.points(feats.to(cfg.device)), cfg.codebook_refine)
            after = evaluate_epoch(cfg, cand, data)
    finally:
        if current is not None:
            backbone.load_state_dict(current)
    info = {
        "iterations": len(changed),
        "codes_changed": changed,
        "val_map_before": float(before),
        "val_map_after": float(after),
        "kept": skipped is None and bool(after >= before),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if skipped:
        info["skipped"] = skipped
    saved["refine"] = info
    if info["kept"]:
        saved["model"] = cand.state_dict()
        if "val_map" in saved:
            saved["val_map"] = float(after)
    atomic_torch_save(saved, path)
    return info


def train(
    cfg: TrainConfig,
    data: TrainingData,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train a model; write ``checkpoint.pt``, ``best.pt`` and ``metrics.jsonl`` to ``out_dir``.

    Per epoch (the module docstring gives the details): :func:`cluster_step` (after the
    warm-up), :func:`train_epoch`, :func:`evaluate_epoch` (every ``eval_interval``
    epochs, keeping the best model with :func:`save_best`), :func:`save_checkpoint`.
    ``cfg`` and ``data`` are not modified (an online backbone with trainable layers is
    trained in place: it is part of the model).

    Parameters
    ----------
    cfg : TrainConfig
    data : TrainingData
    out_dir : folder of the run (created).
    resume : continue from ``out_dir/checkpoint.pt`` if it exists.
    progress : a tqdm bar per epoch in a terminal, and one line per epoch (the only output
        in a notebook, :func:`~hihpq_lib.utils.runtime.progress_bar`).
    stop_after : stop after this many epochs of this call (to simulate a killed run).

    Returns
    -------
    dict with ``model`` (the final model), ``history`` (per-epoch metrics),
    ``best_epoch`` and ``best_val_map`` (validation-selected), ``final_val_map`` (each
    after ``codebook_refine`` where that was kept), ``finished`` (the last epoch done, or stopped
    by ``cfg.patience``: ``stopped_early``), ``refine`` (with ``codebook_refine``,
    :func:`refine_saved`'s record for ``val_selected`` and ``final``, else ``None``),
    ``run_id``, ``threads`` and ``config`` (``cfg`` with ``num_clusters:
    auto`` resolved from ``data``: the one place it is resolved).
    """
    if cfg.num_clusters == "auto":  # the one place it is resolved, from the data trained on
        counts = resolve_num_clusters("auto", data.class_count(), data.n_train)
        cfg = dataclasses.replace(cfg, num_clusters=counts)
    ck = open_run(cfg, out_dir, resume)
    out = Path(out_dir)
    # The thread count changes float rounding: a resumed run keeps the count it started
    # with (recorded in the checkpoint), so that it ends bit for bit like an uninterrupted one.
    threads = int(cfg.threads or (ck or {}).get("threads") or thread_budget(0))
    use_threads(threads)
    run_id = (ck or {}).get("run_id") or uuid.uuid4().hex
    # a resumed run loads every parameter from its checkpoint: the data start is not redone
    model = init_model(cfg, data, torch.device(cfg.device), data_start=ck is None)
    backbone = data.online.backbone if trains_backbone(data) else None
    backbone_params = data.online.trainable_parameters() if backbone is not None else []
    views = data.online if data.online is not None else BankViews(data.bank)
    optimizer = _make_optimizer(cfg, model, backbone_params)
    loss_fn = make_loss(cfg, model)
    schedule = make_schedule(cfg, data.n_train)

    history: list[dict] = []
    start_epoch, best_val, best_epoch = 0, -1.0, -1
    if ck is not None:
        model.load_state_dict(ck["model"])
        if backbone is not None and ck.get("backbone") is not None:
            backbone.load_state_dict(ck["backbone"])
        optimizer.load_state_dict(ck["optimizer"])
        history = list(ck["history"])
        start_epoch, best_val, best_epoch = ck["epoch"] + 1, ck["best_val_map"], ck["best_epoch"]
        write_metrics(out / METRICS, history)
    elif (out / METRICS).exists():
        (out / METRICS).unlink()
    init_val = None
    if ck is None and cfg.eval_init:  # the untrained model is a candidate too (epoch 0)
        init_val = evaluate_epoch(cfg, model, data)
        best_val, best_epoch = init_val, 0
        save_best(out / BEST, model, -1, best_val, run_id, backbone)

    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        # early stop on validation: `patience` epochs without a better validation mAP
        # (checked before an epoch, so a resumed run stops where the killed one would have)
        if cfg.patience and best_epoch >= 0 and epoch - best_epoch >= cfg.patience:
            stopped_early = True
            break
        tc = time.perf_counter()
        hierarchy = None
        if uses_hierarchy(cfg, epoch):
            hierarchy = cluster_step(cfg, model, clean_train_features(data), epoch)
            save_pseudo_hierarchy(out / PSEUDO_HIERARCHY, hierarchy[0], epoch + 1, run_id)
        cluster_s = time.perf_counter() - tc if hierarchy is not None else 0.0
        # the reference leaves the model in eval mode after computing clustering features
        training_mode = not (cfg.eval_mode_after_clustering and epoch >= cfg.hierarchy_warmup)
        t0 = time.perf_counter()
        losses = train_epoch(
            cfg,
            model,
            views,
            optimizer,
            loss_fn,
            schedule,
            epoch,
            data.n_train,
            hierarchy=hierarchy,
            training_mode=training_mode,
            progress=progress,
        )
        record = {"epoch": epoch + 1, **losses, **model.space.summary()}
        record["train_seconds"] = round(time.perf_counter() - t0, 3)
        record["cluster_seconds"] = round(cluster_s, 3)
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            te = time.perf_counter()
            record["val_map"] = evaluate_epoch(cfg, model, data)
            record["eval_seconds"] = round(time.perf_counter() - te, 3)
            if record["val_map"] > best_val:  # model selection on validation mAP
                best_val, best_epoch = record["val_map"], epoch + 1
                save_best(out / BEST, model, epoch, best_val, run_id, backbone)
        history = [*history, record]
        save_checkpoint(
            out / CHECKPOINT,
            cfg,
            model,
            optimizer,
            epoch,
            history,
            (best_val, best_epoch),
            run_id,
            threads,
            backbone,
        )
        write_metrics(out / METRICS, history)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {record['loss']:.4f}"
                + (f"  val mAP@{cfg.topk} {record['val_map']:.4f}" if "val_map" in record else "")
            )
    model.eval()
    final_val = next((h["val_map"] for h in reversed(history) if "val_map" in h), float("nan"))
    finished = stopped_early or (bool(history) and history[-1]["epoch"] == cfg.epochs)
    refined = {}
    if finished and cfg.codebook_refine:  # both saved models, each kept only if validation agrees
        for which, path in (("val_selected", out / BEST), ("final", out / CHECKPOINT)):
            refined[which] = refine_saved(cfg, model, data, path, backbone)
        if (refined["val_selected"] or {}).get("kept"):
            best_val = refined["val_selected"]["val_map_after"]
        if (refined["final"] or {}).get("kept"):
            model.load_state_dict(load_checkpoint(out / CHECKPOINT)["model"])
            final_val = refined["final"]["val_map_after"]
        model.eval()
    return {
        "model": model,
        "history": history,
        "best_epoch": best_epoch,
        "best_val_map": best_val,
        "final_val_map": final_val,
        "init_val_map": init_val,
        "finished": finished,
        "refine": refined or None,
        "stopped_early": stopped_early,
        "run_id": run_id,
        "threads": threads,
        "config": cfg,
    }
