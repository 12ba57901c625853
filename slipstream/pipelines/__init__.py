"""Ready-made pipelines: ``SlipstreamLoader(dataset, pipelines=supervised_train(224))``."""

from .supervised import supervised_train, supervised_val

__all__ = ["supervised_train", "supervised_val"]
