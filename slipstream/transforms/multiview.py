"""Many views from one decode: name copies of a batch, then transform each its own way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import BatchContext, BatchTransform, check_stage

__all__ = ["NamedCopies", "MultiCropPipeline"]


class NamedCopies(BatchTransform):
    """One batch → ``{name: copy}``: independent copies (later in-place transforms of one
    view never show in another) of a single-output decoder's batch."""

    def __init__(self, names: Sequence[str]) -> None:
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"NamedCopies needs distinct names, got {names}")
        self.names = names

    def __call__(self, batch: Any, ctx: BatchContext) -> dict[str, Any]:
        if isinstance(batch, dict):
            raise TypeError("NamedCopies takes one batch tensor; it got a dict of views "
                            "(put it right after a single-output decoder)")
        out = {name: batch.clone() for name in self.names[:-1]}
        out[self.names[-1]] = batch
        return out


class MultiCropPipeline(BatchTransform):
    """``{name: [transforms]}`` applied to the matching views of a dict batch.

    The ``k``-th name's transforms draw their random parameters as view ``k``, so two
    views given the same transforms still get different augmentations. Views the
    mapping does not name pass through unchanged.
    """

    def __init__(self, pipelines: Mapping[str, Sequence[Any]]) -> None:
        if not pipelines:
            raise ValueError("MultiCropPipeline needs at least one view pipeline")
        self.pipelines = {name: list(stages) for name, stages in pipelines.items()}
        for name, stages in self.pipelines.items():
            for i, stage in enumerate(stages):
                check_stage(stage, f"MultiCropPipeline[{name!r}] stage {i}")

    def __call__(self, views: Any, ctx: BatchContext) -> dict[str, Any]:
        if not isinstance(views, dict):
            raise TypeError("MultiCropPipeline takes a dict of views: put NamedCopies or a "
                            "multi-view decoder (DecodeMultiRandomResizedCrop) before it")
        missing = [name for name in self.pipelines if name not in views]
        if missing:
            raise KeyError(f"MultiCropPipeline: no view named {missing}; the batch has "
                           f"{list(views)}")
        out = dict(views)
        for k, (name, stages) in enumerate(self.pipelines.items()):
            value = views[name]
            view_ctx = ctx.for_view(k)
            for stage in stages:
                value = stage(value, view_ctx)
            out[name] = value
        return out
