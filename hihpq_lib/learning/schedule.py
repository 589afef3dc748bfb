"""The learning-rate schedule of a run: steps per epoch, a linear (or the reference's
``linspace``) warm-up and a cosine decay, per optimisation step (:class:`LRSchedule`)."""

from __future__ import annotations

import math

from hihpq_lib.learning.config import TrainConfig

__all__ = ["LRSchedule", "steps_per_epoch", "make_schedule"]


class LRSchedule:
    """Linear warm-up from ``start_lr`` to ``base_lr``, then cosine decay to ``final_lr``.

    Per optimisation step, as the reference's ``WarmUpAndCosineDecayScheduler``. With
    ``W`` warm-up steps and ``T`` steps in all, step ``t``'s learning rate is

    * ``warmup="linspace"`` (reference): ``start + (base - start) * t / (W - 1)`` for
      ``t < W`` (``numpy.linspace(start, base, W)``: ``base`` at the last warm-up step;
      ``start`` when ``W = 1``);
    * ``warmup="linear"``: ``start + (base - start) * t / W`` (``base`` at step ``W``);

    then ``final + (base - final) * (1 + cos(pi * (t - W) / (T - W))) / 2``.

    >>> s = LRSchedule(0.01, 1e-5, 1e-5, total_steps=100, warmup_steps=10)
    >>> round(s(0), 6), round(s(10), 6), round(s(99), 6)
    (1e-05, 0.01, 1.3e-05)
    >>> r = LRSchedule(0.01, 1e-5, 1e-5, 100, 10, warmup="linspace")
    >>> round(r(9), 6), round(s(9), 6)
    (0.01, 0.009001)
    """

    def __init__(self, base_lr, start_lr, final_lr, total_steps, warmup_steps, warmup="linear"):
        if warmup not in ("linear", "linspace"):
            raise ValueError(f"warmup must be 'linear' or 'linspace', got {warmup!r}")
        self.base, self.start, self.final = base_lr, start_lr, final_lr
        self.total, self.warm = max(1, total_steps), max(0, warmup_steps)
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        if step < self.warm:
            if self.warmup == "linspace":
                frac = step / (self.warm - 1) if self.warm > 1 else 0.0
            else:
                frac = step / self.warm
            return self.start + (self.base - self.start) * frac
        t = (step - self.warm) / max(1, self.total - self.warm)
        return self.final + 0.5 * (self.base - self.final) * (1 + math.cos(math.pi * min(t, 1.0)))


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Optimisation steps per epoch over ``n`` images.

    ``drop_last``: ``floor(n / batch_size)``; else (the reference's DataLoader)
    ``ceil(n / batch_size)``, less one when the last batch would hold a single image
    (the contrastive loss needs two).

    >>> steps_per_epoch(5000, 128), steps_per_epoch(5000, 128, drop_last=False)
    (39, 40)
    >>> steps_per_epoch(257, 128, drop_last=False)
    2
    """
    if drop_last:
        return max(1, n // batch_size)
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest >= 2 else 0))


def make_schedule(cfg: TrainConfig, n_train: int) -> LRSchedule:
    """The per-step learning-rate schedule of a run over ``n_train`` images."""
    n_steps = steps_per_epoch(n_train, cfg.batch_size, cfg.drop_last)
    return LRSchedule(
        cfg.lr,
        cfg.start_lr,
        cfg.final_lr,
        cfg.epochs * n_steps,
        cfg.lr_warmup_epochs * n_steps,
        warmup=cfg.lr_warmup,
    )
