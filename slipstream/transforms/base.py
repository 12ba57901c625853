"""What every pipeline stage sees: the batch's context, and the stage contracts."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._rng import stream_id, uniforms
from ..errors import PipelineError

__all__ = ["BatchContext", "BatchTransform", "check_stage"]


@dataclass(frozen=True)
class BatchContext:
    """Identifies a batch for random draws: ``(seed, epoch)`` and its samples' indices.

    Random parameters come from :meth:`uniforms`, keyed by (seed, epoch, sample index,
    view, stream), so a sample gets the same augmentation wherever it lands.
    """

    seed: int
    epoch: int
    indices: np.ndarray
    view: int = 0

    def uniforms(self, stream: str, draws: int = 1) -> np.ndarray:
        """``(batch, draws)`` uniforms in [0, 1) for the named random stream."""
        return uniforms(self.seed, self.epoch, self.indices, self.view, stream_id(stream), draws)

    def for_view(self, view: int) -> BatchContext:
        return BatchContext(self.seed, self.epoch, self.indices, view)

    def reseeded(self, seed: int | None) -> BatchContext:
        """This context with its seed replaced, unless ``seed`` is None."""
        return self if seed is None else BatchContext(seed, self.epoch, self.indices, self.view)


class BatchTransform(abc.ABC):
    """A stage after the decoder: takes and returns a batch tensor (or a dict of them)."""

    @abc.abstractmethod
    def __call__(self, batch: Any, ctx: BatchContext) -> Any: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    return None if device is None else torch.device(device)


def check_stage(stage: Any, where: str) -> None:
    """Refuse a pipeline stage that is not a :class:`BatchTransform`, naming it and the fix.

    A stage is called as ``stage(batch, ctx)``; a function or a third-party transform
    called as ``fn(batch)`` would get a stray argument, or silently compute something
    else, so it has to say so by being wrapped in ``Lambda``."""
    if isinstance(stage, BatchTransform):
        return
    shown = getattr(stage, "__name__", None) or type(stage).__name__
    fix = (f"wrap it as slipstream.transforms.Lambda({shown}) to have it called as "
           f"{shown}(batch)" if callable(stage) else "remove it")
    raise PipelineError(
        f"{where}: {stage!r:.80} is not a batch transform (a slipstream transform called as "
        f"stage(batch, ctx)); {fix}")
