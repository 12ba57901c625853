"""Plain callables as pipeline stages: ``Lambda(fn)`` calls ``fn(batch)``, without ``ctx``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import PipelineError
from .base import BatchContext, BatchTransform

__all__ = ["Lambda"]


class Lambda(BatchTransform):
    """A stage that calls ``fn(batch)`` and passes on what it returns.

    For functions and third-party transforms that take one batch and know nothing of
    slipstream's context: ``torch.flip``-like functions, a ``torchvision.transforms.v2``
    transform, a ``torch.nn.Module``. ``fn`` sees the whole batch at once, so a random
    transform draws once per call: every sample of the batch gets the same draw (see
    docs/pipelines.md). Per-sample randomness keyed by the sample needs a slipstream
    transform, which draws from ``ctx``.
    """

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise PipelineError(f"Lambda needs a callable fn(batch), got {fn!r:.80}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        out = self.fn(batch)
        if out is None:
            raise PipelineError(f"Lambda({self.name}) returned None; fn must return the new "
                                f"batch (a function that works in place should return its input)")
        return out

    def __repr__(self) -> str:
        return f"Lambda({self.name})"
