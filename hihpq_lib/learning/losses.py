r"""HiHPQ's three losses, written over any :class:`~hihpq_lib.geometry.manifolds.ProductSpace`.

With the product distance :math:`D(a, b) = \sum_{m=1}^M d_m(a_m, b_m)` and a
temperature :math:`\tau`, similarities are :math:`s(a, b) = -D(a, b)/\tau`.

* :func:`quantized_contrastive_loss` — NT-Xent between the soft-quantized vectors of two
  augmented views (each of the ``2B`` views against the other ``2B - 1``).
* :func:`prototype_loss` — at each level of the pseudo hierarchy, each sample against
  the cluster centroids of that level (mapped from the tangent space to the product
  space), the positive being its own cluster; averaged over levels. ``mode="reference"``
  (the paper's code) has one prototype column per batch sample plus one per cluster
  absent from the batch, so a cluster with ``m_c`` members in the batch counts ``m_c``
  times in the denominator; ``mode="clusters"`` is a plain cross-entropy over clusters.
* :func:`instance_loss` — each anchor against the batch, the positive being a
  same-cluster neighbour (the first one in batch order, as in the reference).
  ``mode="reference"`` keeps the anchor itself in the denominator and divides by the
  batch size; ``mode="masked"`` excludes it and averages over the anchors that have a
  neighbour. Then averaged over levels.

Because the space is a parameter, the Euclidean ablations use the same functions.
:class:`HiHPQLoss` combines them: ``L = L_cl + w_p L_proto + w_i L_inst`` with the
reference weights ``w_p = 1`` and ``w_i = 0.1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hihpq_lib.geometry.manifolds import ProductSpace

__all__ = [
    "product_distance",
    "quantized_contrastive_loss",
    "prototype_loss",
    "instance_loss",
    "first_neighbour",
    "neighbour_loss",
    "HiHPQLoss",
    "PROTOTYPE_MODES",
    "INSTANCE_MODES",
]

#: ``mode`` values of :func:`prototype_loss` (the reference's first).
PROTOTYPE_MODES = ("reference", "clusters")
#: ``mode`` values of :func:`instance_loss` (the reference's first).
INSTANCE_MODES = ("reference", "masked")


def product_distance(space: ProductSpace, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed per-subspace distances ``(B, M, D'), (N, M, D') -> (B, N)``."""
    return space.pairwise_dist(x, y).sum(0)


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be positive, got {tau}")


def quantized_contrastive_loss(
    z1: torch.Tensor, z2: torch.Tensor, space: ProductSpace, tau: float = 0.2
) -> torch.Tensor:
    r"""NT-Xent over the product distance between two views.

    .. math::
        \mathcal L_{cl} = -\frac{1}{2B}\sum_{i=1}^{2B}
        \log\frac{\exp s(z_i, z_{i^+})}{\sum_{j\ne i}\exp s(z_i, z_j)}

    Parameters
    ----------
    z1, z2 : (B, M, D') float
        Soft-quantized points of the two views; row ``i`` of ``z1`` and ``z2`` come
        from the same image.
    space : ProductSpace
    tau : float
        Temperature (reference: 0.2).

    Returns
    -------
    () float
    """
    _check_tau(tau)
    if z1.shape != z2.shape or z1.dim() != 3:
        raise ValueError(
            f"z1 and z2 must both be (B, M, D'), got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    B = z1.shape[0]
    if B < 2:
        raise ValueError("the contrastive loss needs a batch of at least 2 images")
    z = torch.cat([z1, z2], dim=0)
    sim = -product_distance(space, z, z) / tau
    eye = torch.eye(2 * B, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, target)


def prototype_loss(
    z: torch.Tensor,
    labels: Sequence[torch.Tensor],
    tangent_centroids: Sequence[torch.Tensor],
    space: ProductSpace,
    tau: float = 0.2,
    mode: str = "reference",
) -> torch.Tensor:
    r"""Prototype-wise contrastive loss, averaged over the hierarchy levels.

    ``mode="clusters"``:

    .. math::
        \mathcal L_{proto} = \frac{1}{L}\sum_{l=1}^{L} \frac{1}{B}\sum_{i=1}^{B}
        -\log\frac{\exp s(z_i, \mu^l_{y^l_i})}{\sum_{c=1}^{C_l}\exp s(z_i, \mu^l_c)}

    ``mode="reference"`` (the paper's code): the logits hold the prototype of every batch
    sample (a cluster repeated once per member) and then each cluster absent from the
    batch once, the target of sample ``i`` being column ``i``; so with
    :math:`m_c = \max(1, |\{j : y_j = c\}|)`

    .. math::
        \ell_i = -s(z_i, \mu_{y_i}) + \log \sum_{c} m_c \exp s(z_i, \mu_c).

    The two agree when every sample of the batch is in a different cluster.

    Parameters
    ----------
    z : (B, M, D') float
        Soft-quantized points of a batch.
    labels : list of L tensors (B,) int64
        Cluster index of each sample at each level.
    tangent_centroids : list of L tensors (C_l, M*d) float
        Cluster centroids in the tangent space; they are mapped onto the product space
        here (so gradients reach the curvatures, as in the reference).
    mode : {"reference", "clusters"}
        Default: the reference's.
    """
    _check_tau(tau)
    if mode not in PROTOTYPE_MODES:
        raise ValueError(f"prototype loss mode must be one of {PROTOTYPE_MODES}, got {mode!r}")
    if len(labels) != len(tangent_centroids) or len(labels) == 0:
        raise ValueError("labels and tangent_centroids must be non-empty lists of equal length")
    losses = []
    for lab, cent in zip(labels, tangent_centroids):
        if cent.dim() != 2 or cent.shape[1] != space.M * space.dim:
            raise ValueError(
                f"centroids must be (C, M*d={space.M * space.dim}), got {tuple(cent.shape)}"
            )
        mu = space.embed(cent.to(z.dtype).view(cent.shape[0], space.M, space.dim))
        logits = -product_distance(space, z, mu) / tau
        lab = lab.long().to(z.device)
        if mode == "reference":
            # column multiplicities: batch members per cluster, 1 for an absent cluster
            counts = torch.bincount(lab, minlength=cent.shape[0]).clamp_min(1)
            own = logits.gather(1, lab[:, None]).squeeze(1)
            denom = torch.logsumexp(logits + counts.to(logits.dtype).log(), dim=1)
            losses.append((denom - own).mean())
        else:
            losses.append(F.cross_entropy(logits, lab))
    return torch.stack(losses).mean()


def first_neighbour(labels: torch.Tensor) -> torch.Tensor:
    """For each sample, the index of the first *other* sample with the same label, or -1.

    >>> first_neighbour(torch.tensor([3, 1, 3, 2, 1, 3]))
    tensor([ 2,  4,  0, -1,  1,  0])
    """
    lab = labels.reshape(-1)
    same = lab[:, None] == lab[None, :]
    same.fill_diagonal_(False)
    has = same.any(dim=1)
    idx = same.to(torch.int8).argmax(dim=1)
    return torch.where(has, idx, torch.full_like(idx, -1))


def instance_loss(
    z: torch.Tensor,
    labels: Sequence[torch.Tensor],
    space: ProductSpace,
    tau: float = 0.2,
    mode: str = "reference",
) -> torch.Tensor:
    r"""Instance-wise loss toward a same-cluster neighbour, averaged over levels.

    Let :math:`V_l` be the anchors with a same-cluster neighbour :math:`n(i)` in the
    batch at level :math:`l`. ``mode="masked"``:

    .. math::
        \ell_i = -\log\frac{\exp s(z_i, z_{n(i)})}{\sum_{j\ne i}\exp s(z_i, z_j)},
        \qquad \mathcal L_l = \frac{1}{|V_l|}\sum_{i\in V_l}\ell_i

    (0 for a level where :math:`V_l` is empty). ``mode="reference"`` (the paper's code):
    the denominator runs over all :math:`j` including :math:`i` itself (whose similarity
    :math:`s(z_i, z_i) = 0` is the largest), and the sum is divided by the batch size
    :math:`B`:

    .. math::
        \ell_i = -\log\frac{\exp s(z_i, z_{n(i)})}{\sum_{j=1}^{B}\exp s(z_i, z_j)},
        \qquad \mathcal L_l = \frac{1}{B}\sum_{i\in V_l}\ell_i

    Parameters
    ----------
    z : (B, M, D') float
    labels : list of L tensors (B,) int64
    mode : {"reference", "masked"}
        Default: the reference's.
    """
    _check_tau(tau)
    if mode not in INSTANCE_MODES:
        raise ValueError(f"instance loss mode must be one of {INSTANCE_MODES}, got {mode!r}")
    if len(labels) == 0:
        raise ValueError("labels must be a non-empty list (one tensor per level)")
    B = z.shape[0]
    sim = -product_distance(space, z, z) / tau
    if mode == "masked":
        eye = torch.eye(B, dtype=torch.bool, device=z.device)
        sim = sim.masked_fill(eye, float("-inf"))
    losses = []
    for lab in labels:
        nb = first_neighbour(lab.to(z.device))
        valid = nb >= 0
        if not bool(valid.any()):
            losses.append(sim.new_zeros(()))
        elif mode == "masked":
            losses.append(F.cross_entropy(sim[valid], nb[valid]))
        else:
            losses.append(F.cross_entropy(sim[valid], nb[valid], reduction="sum") / B)
    return torch.stack(losses).mean()


def neighbour_loss(
    teacher: torch.Tensor,
    z: torch.Tensor,
    space: ProductSpace,
    tau: float = 0.2,
    teacher_tau: float = 0.1,
) -> torch.Tensor:
    r"""Keep the neighbours the frozen features give (not in the paper; a CPU-design term).

    .. math::
        \mathcal L_{nb} = \frac1B\sum_i \mathrm{KL}\big(p_i \,\|\, q_i\big),\quad
        p_{ij} \propto \exp\frac{\cos(f_i, f_j)}{\tau_t},\quad
        q_{ij} \propto \exp\frac{-D(z_i, z_j)}{\tau}, \quad j \ne i

    Parameters
    ----------
    teacher : (B, F) the frozen backbone features of the batch (no gradient flows to them).
    z : (B, M, D') soft-quantized points of the same images.
    space : ProductSpace
    tau : temperature of the student (the other losses' ``tau``).
    teacher_tau : temperature of the teacher's cosine similarities.
    """
    _check_tau(tau)
    _check_tau(teacher_tau)
    B = z.shape[0]
    if teacher.shape[0] != B:
        raise ValueError(f"teacher has {teacher.shape[0]} rows, the batch {B}")
    eye = torch.eye(B, dtype=torch.bool, device=z.device)
    f = F.normalize(teacher.detach().to(z.dtype), dim=1)
    t_logits = (f @ f.T / teacher_tau).masked_fill(eye, float("-inf"))
    s_logits = (-product_distance(space, z, z) / tau).masked_fill(eye, float("-inf"))
    p = F.softmax(t_logits, dim=1)
    log_p = F.log_softmax(t_logits, dim=1).masked_fill(eye, 0.0)
    log_q = F.log_softmax(s_logits, dim=1).masked_fill(eye, 0.0)
    return (p * (log_p - log_q)).sum(1).mean()


class HiHPQLoss(nn.Module):
    """The full objective: contrastive + prototype-wise + instance-wise.

    Parameters
    ----------
    space : ProductSpace
    tau : float
        Temperature of all three losses (reference ``T``: 0.2).
    proto_weight, instance_weight : float
        Weights of the hierarchy losses (reference: 1.0 and 0.1). Zero disables one.
    prototype_mode, instance_mode : str
        See :func:`prototype_loss` and :func:`instance_loss` (``"reference"`` = the
        paper's code).
    """

    def __init__(
        self,
        space: ProductSpace,
        tau: float = 0.2,
        proto_weight: float = 1.0,
        instance_weight: float = 0.1,
        prototype_mode: str = "reference",
        instance_mode: str = "reference",
        neighbour_weight: float = 0.0,
        neighbour_tau: float = 0.1,
    ):
        super().__init__()
        _check_tau(tau)
        if prototype_mode not in PROTOTYPE_MODES:
            raise ValueError(f"prototype_mode must be one of {PROTOTYPE_MODES}")
        if instance_mode not in INSTANCE_MODES:
            raise ValueError(f"instance_mode must be one of {INSTANCE_MODES}")
        self.space = space
        self.tau, self.proto_weight, self.instance_weight = tau, proto_weight, instance_weight
        self.prototype_mode, self.instance_mode = prototype_mode, instance_mode
        self.neighbour_weight, self.neighbour_tau = neighbour_weight, neighbour_tau

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        labels: Sequence[torch.Tensor] | None = None,
        tangent_centroids: Sequence[torch.Tensor] | None = None,
        teacher: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "contrastive", "prototype", "instance", "neighbour"}`` (scalars).

        ``labels``/``tangent_centroids`` (per level, for this batch) switch the
        hierarchy losses on; before the first clustering pass them as ``None``.
        ``teacher``: the frozen features of ``z1``'s images, for :func:`neighbour_loss`
        (used when ``neighbour_weight > 0``).
        """
        cl = quantized_contrastive_loss(z1, z2, self.space, self.tau)
        zero = cl.new_zeros(())
        proto, inst = zero, zero
        if labels is not None:
            if self.proto_weight and tangent_centroids is not None:
                proto = prototype_loss(
                    z1, labels, tangent_centroids, self.space, self.tau, self.prototype_mode
                )
            if self.instance_weight:
                inst = instance_loss(z1, labels, self.space, self.tau, self.instance_mode)
        nb = zero
        if self.neighbour_weight and teacher is not None:
            nb = neighbour_loss(teacher, z1, self.space, self.tau, self.neighbour_tau)
        total = cl + self.proto_weight * proto + self.instance_weight * inst
        if self.neighbour_weight:
            total = total + self.neighbour_weight * nb
        parts = {"loss": total, "contrastive": cl, "prototype": proto, "instance": inst}
        if self.neighbour_weight:
            parts["neighbour"] = nb
        return parts
