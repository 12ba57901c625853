"""The hooks a slipstream plugin can implement.

A plugin is a module (or object) named by an entry point in the ``slipstream`` group::

    [project.entry-points.slipstream]
    webdataset = "slipstream_webdataset"

and implements any of the hooks below, marked with :data:`hookimpl`::

    from slipstream.plugin import hookimpl

    @hookimpl
    def slipstream_sources():
        return [WebDatasetSource]

The built-in sources and stores are registered exactly this way; ``docs/plugins.md``
is the guide, and :mod:`slipstream.plugin` holds everything a plugin imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .sources.base import Source
    from .stores.base import CacheStore

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl"]

PROJECT_NAME = "slipstream"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- sources ---------------------------------------------------------------------------
@hookspec
def slipstream_sources() -> Sequence[type[Source]]:
    """Return the :class:`~slipstream.sources.Source` subclasses this plugin provides.

    Each class needs a unique ``name``. Every result is collected; a name given by two
    plugins is an error that names both.
    """


# -- cache stores ------------------------------------------------------------------------
@hookspec
def slipstream_stores() -> Sequence[type[CacheStore]]:
    """Return the :class:`~slipstream.stores.CacheStore` subclasses this plugin provides.

    Each class declares the URL ``protocols`` it serves and implements the store contract
    (``slipstream/stores/base.py``; checked by :class:`slipstream.testing.StoreTests`). A
    protocol claimed by two plugins is an error that names both.
    """
