"""Ready-made pipelines: ``SlipstreamLoader(dataset, pipelines=supervised_train(224))``."""

from .ssl import ViewRecipe, ipcl, lejepa, multicrop, multiview_pipeline, simclr
from .supervised import supervised_train, supervised_val

__all__ = [
    "ViewRecipe",
    "ipcl",
    "lejepa",
    "multicrop",
    "multiview_pipeline",
    "simclr",
    "supervised_train",
    "supervised_val",
]
