"""Tensors to numpy, from any device: the one door between torch and numpy.

``tensor.numpy()`` fails on a CUDA (or any non-CPU) tensor and on one that requires
grad; code tested only on the CPU never notices. Every conversion in ``hihpq_lib`` goes
through :func:`to_numpy` (``tests/test_device.py`` fails on a bare ``.numpy()``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_numpy"]


def to_numpy(x, dtype=None) -> np.ndarray:
    """``x`` as a numpy array: a tensor is detached and moved to the CPU first.

    ``dtype``: convert the result (``np.float64`` ...); arrays and other array-likes pass
    through :func:`numpy.asarray`.

    >>> to_numpy(torch.tensor([1.0, 2.0], requires_grad=True))
    array([1., 2.], dtype=float32)
    >>> to_numpy(torch.tensor([1, 2]), np.float64)
    array([1., 2.])
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()  # the one sanctioned .numpy(): the tensor is on the CPU
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
