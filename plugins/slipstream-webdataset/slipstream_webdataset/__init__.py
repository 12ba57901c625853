"""WebDataset tar shards as a slipstream source.

Installing this package is all it takes: its ``slipstream`` entry point registers
:class:`WebDatasetSource` under the name ``webdataset``, and
``SlipstreamDataset("s3://bucket/shards/")`` (or a single ``.tar`` shard, at any
fsspec URL) detects it.
"""

from __future__ import annotations

from collections.abc import Sequence

from slipstream.plugin import Source, hookimpl

from .source import WebDatasetSource

__all__ = ["WebDatasetSource", "slipstream_sources"]

__version__ = "0.1.0"


@hookimpl
def slipstream_sources() -> Sequence[type[Source]]:
    """The slipstream hook: this plugin provides one source."""
    return [WebDatasetSource]
