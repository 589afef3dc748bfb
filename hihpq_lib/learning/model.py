"""The HiHPQ model: a trainable head on top of backbone features, then the quantizer.

CPU fast path: the backbone is frozen and its features are precomputed, so the model
sees feature vectors ``(B, F)``. The paper's path (GPU) wraps a backbone too
(:class:`HiHPQNet`), with the same head and quantizer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hihpq_lib.geometry.manifolds import ProductSpace, make_space
from hihpq_lib.learning.config import TrainConfig
from hihpq_lib.quantization.index import PQIndex
from hihpq_lib.quantization.quantizer import ProductQuantizer, QuantizerOutput
from hihpq_lib.utils.arrays import to_numpy

__all__ = ["BlockNorm", "ProjectionHead", "HiHPQModel", "HiHPQNet", "build_model"]


def _symmetric_eigh(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix, robust to degenerate spectra.

    LAPACK's divide-and-conquer ``syevd`` (``torch.linalg.eigh``) can fail to converge on
    matrices with many repeated eigenvalues (e.g. features of a few near-identical images);
    then SciPy's ``syevr`` runs on the matrix plus a tiny ridge.
    """
    try:
        return torch.linalg.eigh(cov)
    except torch.linalg.LinAlgError:
        import scipy.linalg

        ridge = 1e-12 * max(float(torch.diagonal(cov).mean()), 1e-300)
        a = to_numpy(cov) + ridge * np.eye(cov.shape[0])
        w, v = scipy.linalg.eigh(a, driver="evr")
        return (
            torch.as_tensor(w, dtype=cov.dtype, device=cov.device),
            torch.as_tensor(v, dtype=cov.dtype, device=cov.device),
        )


class BlockNorm(nn.Module):
    """The features' norms compressed block by block, before the head (``block_norm_power``).

    ``x -> b * max(|b|, eps) ** (power - 1)`` for every contiguous block ``b`` of
    ``x - mean`` (``blocks`` of them, as classical PQ splits the features), so that each
    centred block keeps its direction and has norm ``|b| ** power``: ``power = 1`` keeps
    the norms (the module is then not built), ``0`` puts every block on the unit sphere
    (the Euclidean twin compares directions only), ``0.5`` their square root. ``mean`` is a
    buffer fitted once on the training features (:meth:`fit_`) and saved with the model,
    so every later call (evaluation, search, a resumed run) transforms alike.
    """

    eps = 1e-6

    def __init__(self, in_dim: int, blocks: int, power: float):
        super().__init__()
        if blocks < 1 or in_dim % blocks:
            raise ValueError(f"BlockNorm needs blocks dividing in_dim, got {blocks} for {in_dim}")
        self.blocks, self.power = int(blocks), float(power)
        self.register_buffer("mean", torch.zeros(int(in_dim)))

    @torch.no_grad()
    def fit_(self, feats: torch.Tensor) -> BlockNorm:
        """Set ``mean`` to the mean of ``feats`` ``(N, F)`` (in float64). Returns ``self``."""
        self.mean.copy_(feats.double().mean(0).to(self.mean.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = (x - self.mean.to(x.dtype)).reshape(*x.shape[:-1], self.blocks, -1)
        norm = b.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return (b * norm.pow(self.power - 1.0)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, power={self.power}"


class ProjectionHead(nn.Module):
    """Projection MLP ``F -> hidden -> feat_dim`` (plays the part of VGG's trainable fc layers).

    ``hidden=0`` gives a single linear layer (the reference's ``projction_layer``).
    ``skip=True`` adds a linear path ``F -> feat_dim`` beside the MLP (``skip(x) + net(x)``),
    the path :meth:`init_pca_` starts at the features' principal components.
    """

    def __init__(self, in_dim: int, feat_dim: int, hidden: int = 512, skip: bool = False):
        super().__init__()
        if hidden and hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, feat_dim),
            )
        else:
            self.net = nn.Linear(in_dim, feat_dim)
        self.skip = nn.Linear(in_dim, feat_dim) if skip and hidden and hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if self.skip is None else out + self.skip(x)

    @torch.no_grad()
    def init_pca_(
        self, feats: torch.Tensor, n_subspaces: int, target_norm: float = 1.0, *, raw=False
    ):
        """Start the linear path at the principal components of ``feats`` ``(N, F)``.

        Output ``j`` of sub-vector ``m`` (``j``-th of ``d = feat_dim / M``) is the principal
        component ``j * M + m``, so every subspace gets a share of the large and the small
        components (as OPQ's eigenvalue allocation balances variance); the projection is
        scaled so that the median sub-vector norm of ``feats`` is ``target_norm``; the MLP
        (if any) starts at zero, so the head is exactly that projection. Returns ``self``.

        ``raw=True`` (``head_init="raw"``): no rotation, the centred features themselves
        (``feat_dim`` = their dimension), sub-vector ``m`` their ``m``-th contiguous block,
        as classical PQ splits them; scaled and started the same way.
        """
        lin = self.net if self.skip is None else self.skip
        out_dim, in_dim = lin.weight.shape
        x = feats.double()
        if x.dim() != 2 or x.shape[1] != in_dim or out_dim % n_subspaces:
            raise ValueError(
                f"init_pca_ needs features (N, {in_dim}) and feat_dim divisible by M "
                f"(got {tuple(x.shape)}, feat_dim {out_dim}, M {n_subspaces})"
            )
        mean = x.mean(0)
        centred = x - mean
        if raw:  # the features' own coordinates, in contiguous blocks: PQ's subspaces
            if out_dim != in_dim:
                raise ValueError(
                    f"head_init=raw keeps the features' coordinates: feat_dim must equal their "
                    f"dimension {in_dim}, got {out_dim}"
                )
            weight = torch.eye(in_dim, dtype=torch.float64)
            return self._set_linear(lin, weight, mean, centred, n_subspaces, target_norm)  # W x = x
        evals, evecs = _symmetric_eigh(centred.T @ centred)  # exact; F x F is small
        q = min(out_dim, len(x))
        v = evecs[:, torch.argsort(evals, descending=True)[:q]]  # (F, q), descending variance
        d = out_dim // n_subspaces
        weight = torch.zeros(out_dim, in_dim, dtype=torch.float64)
        for m in range(n_subspaces):
            for j in range(d):
                comp = j * n_subspaces + m
                if comp < q:
                    weight[m * d + j] = v[:, comp]
        return self._set_linear(lin, weight, mean, centred @ weight.T, n_subspaces, target_norm)

    @torch.no_grad()
    def _set_linear(self, lin, weight, mean, projected, n_subspaces: int, target_norm: float):
        """The linear path ``x -> scale * weight @ (x - mean)``, scaled so that the median
        sub-vector norm of ``projected`` (the centred features through ``weight``) is
        ``target_norm``; the MLP starts at 0."""
        out_dim = weight.shape[0]
        proj = projected.reshape(len(projected), n_subspaces, out_dim // n_subspaces)
        median = proj.norm(dim=-1).median()
        scale = target_norm / float(median) if float(median) > 0 else 1.0
        lin.weight.copy_((scale * weight).to(lin.weight.dtype))
        lin.bias.copy_((-scale * (weight @ mean)).to(lin.bias.dtype))
        if self.skip is not None:
            last = self.net[-1]
            last.weight.zero_()
            last.bias.zero_()
        return self


class HiHPQModel(nn.Module):
    """Head + product quantizer over backbone features.

    Parameters
    ----------
    in_dim : int, backbone feature dimension ``F``.
    space : ProductSpace, the product of hyperboloids (or Euclidean spaces).
    K : int, codewords per codebook.
    softmax_temp : float, codebook attention temperature.
    attention : str, the distance in the codebook attention (see ProductQuantizer).
    head_hidden : int, hidden width of the projection head (0 = linear).
    head_skip : bool, a linear path beside the head's MLP (``head_init="pca"``).
    ambient : bool, the reference's subspace convention (see
        :class:`~hihpq_lib.quantization.quantizer.ProductQuantizer`): the head emits ``M * (d + 1)``
        values and the first of each chunk is discarded.
    block_norm_power : float, below 1 a :class:`BlockNorm` before the head (``M`` blocks of
        the features, one when ``M`` does not divide ``in_dim``); 1 (default): none.
    """

    def __init__(
        self,
        in_dim: int,
        space: ProductSpace,
        K: int = 256,
        softmax_temp: float = 1.0,
        head_hidden: int = 512,
        attention: str = "sqdist",
        ambient: bool = False,
        head_skip: bool = False,
        block_norm_power: float = 1.0,
    ):
        super().__init__()
        self.in_dim = int(in_dim)
        self.block_norm = None
        if float(block_norm_power) != 1.0:
            m = space.M if self.in_dim % space.M == 0 else 1
            self.block_norm = BlockNorm(self.in_dim, m, block_norm_power)
        self.quantizer = ProductQuantizer(
            space, K=K, temperature=softmax_temp, attention=attention, ambient=ambient
        )
        self.head = ProjectionHead(in_dim, self.quantizer.feature_dim, head_hidden, skip=head_skip)

    @property
    def space(self) -> ProductSpace:
        return self.quantizer.space

    def _check(self, feats: torch.Tensor) -> None:
        if not torch.is_tensor(feats) or feats.dim() != 2 or feats.shape[1] != self.in_dim:
            shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
            raise ValueError(
                f"backbone features must have shape (B, {self.in_dim}); got {shape} "
                "(was the model built for another backbone?)"
            )

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, F)`` -> head outputs ``(B, M*d)`` (tangent features)."""
        self._check(feats)
        return self.head(self.normalise(feats.to(self.quantizer.codebooks.dtype)))

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """What the head reads: ``feats`` through :class:`BlockNorm` (as they are without one)."""
        return feats if self.block_norm is None else self.block_norm(feats)

    def forward(self, feats: torch.Tensor) -> QuantizerOutput:
        return self.quantizer(self.project(feats))

    @torch.no_grad()
    def points(self, feats: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Unquantized points on the product space ``(N, M, D')`` (queries)."""
        was = self.training
        self.eval()
        out = torch.cat([self.quantizer.embed(self.project(c)) for c in feats.split(batch_size)])
        self.train(was)
        return out

    @torch.no_grad()
    def tangent(self, feats: torch.Tensor, batch_size: int = 4096, raw: bool = False):
        """Tangent-space features for clustering, ``(N, M*d)``.

        ``raw=False``: ``log_o(points)``, i.e. the clipped tangent vectors (unit sub-vectors
        in the normalised Euclidean space). ``raw=True`` (the reference's
        ``encode_tangent_feats``): the head outputs as they are (first coordinate of each
        chunk dropped with ``ambient``), no clipping, no exp/log map. Eval mode either way.
        """
        if not raw:
            pts = self.points(feats, batch_size)
            return self.space.log(pts).reshape(pts.shape[0], -1)
        was = self.training
        self.eval()
        out = torch.cat(
            [self.quantizer.tangent_input(self.project(c)) for c in feats.split(batch_size)]
        )
        self.train(was)
        return out.reshape(out.shape[0], -1)

    @torch.no_grad()
    def encode(self, feats: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Database codes ``(N, M)`` uint8."""
        return self.quantizer.encode_points(self.points(feats, batch_size), batch_size)

    @torch.no_grad()
    def build_index(self, db_feats: torch.Tensor, metadata: dict | None = None) -> PQIndex:
        """A :class:`~hihpq_lib.quantization.index.PQIndex` holding the codes of ``db_feats``."""
        cw = self.quantizer.codewords().detach()
        k = self.space.k  # None for a flat space
        k = None if k is None else k.detach()
        index = PQIndex(cw, k, geometry=self.space.geometry, metadata=metadata)
        index.add(self.encode(db_feats))
        return index


class HiHPQNet(nn.Module):
    """Backbone + :class:`HiHPQModel`: the paper's end-to-end path (online augmentation).

    The backbone's parameters train or not as the backbone sets ``requires_grad``
    (VGG-16's ``trainable_layer_num``).
    """

    def __init__(self, backbone: nn.Module, model: HiHPQModel):
        super().__init__()
        self.backbone, self.model = backbone, model

    def forward(self, images: torch.Tensor) -> QuantizerOutput:
        return self.model(self.backbone(images))


def build_model(cfg: TrainConfig, in_dim: int) -> HiHPQModel:
    """The model a config describes, for backbone features of dimension ``in_dim``."""
    if cfg.geometry == "lorentz":
        space = make_space(
            "lorentz",
            cfg.M,
            cfg.space_dim,
            curvature=cfg.curvature,
            learn_curvature=cfg.learn_curvature,
            clip_r=cfg.clip_r,
        )
    else:
        space = make_space("euclidean", cfg.M, cfg.space_dim)
    return HiHPQModel(
        in_dim,
        space,
        K=cfg.K,
        softmax_temp=cfg.softmax_temp,
        head_hidden=cfg.head_hidden,
        attention=cfg.attention,
        ambient=cfg.subspace == "ambient",
        head_skip=cfg.head_init in ("pca", "raw"),
        block_norm_power=cfg.block_norm_power,
    )
