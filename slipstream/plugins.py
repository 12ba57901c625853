"""The plugin host: one pluggy manager, loading the ``slipstream`` entry points on first use."""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError

if TYPE_CHECKING:
    from .sources.base import Source
    from .stores.base import CacheStore

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "PluginHost", "get_plugin_host"]

#: The entry-point group scanned for plugins (built-ins included).
ENTRY_POINT_GROUP = "slipstream"


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin and where it came from."""

    name: str
    module: str
    distribution: str
    version: str
    sources: tuple[str, ...]
    stores: tuple[str, ...]


class PluginHost:
    """Wraps a :class:`pluggy.PluginManager` with slipstream's registries.

    Entry points are loaded on the first call that needs them, never at import.
    """

    def __init__(self, load_entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._lock = threading.Lock()
        self._sources: dict[str, type[Source]] = {}
        self._stores: dict[str, type[CacheStore]] = {}
        #: plugin name -> (distribution, version) for plugins loaded from entry points
        self._dists: dict[str, tuple[str, str]] = {}

    @property
    def manager(self) -> pluggy.PluginManager:
        return self._pm

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object directly (for tests and embedding applications)."""
        with self._lock:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()
            if self._loaded:
                self._collect()

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            if self._load_entry_points:
                self._load_entry_point_plugins()
            self._pm.check_pending()
            self._collect()
            self._loaded = True

    def _load_entry_point_plugins(self) -> None:
        """Import and register every plugin in the entry-point group (as pluggy's
        ``load_setuptools_entrypoints`` does), naming the entry point and its
        distribution when one fails to import or to register."""
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self._pm.get_plugin(ep.name) is not None \
                        or self._pm.is_blocked(ep.name):
                    continue
                name, version = dist.metadata["Name"] or "?", dist.version or "?"
                where = (f"plugin {ep.name!r} (entry point {ep.name} = {ep.value!r} of the "
                         f"distribution {name} {version})")
                try:
                    plugin = ep.load()
                    self._pm.register(plugin, name=ep.name)
                except Exception as exc:
                    raise PluginError(
                        f"{where} failed to load: {type(exc).__name__}: {exc}. Fix it, or "
                        f"uninstall it with `pip uninstall {name}`"
                    ) from exc
                self._dists[ep.name] = (name, version)

    def _collect(self) -> None:
        from .sources.base import Source
        from .stores.base import CacheStore

        self._sources.clear()
        self._stores.clear()
        owner: dict[str, str] = {}
        for impl in self._pm.hook.slipstream_sources.get_hookimpls():
            plugin_name = impl.plugin_name
            for cls in _results(impl):
                if not (isinstance(cls, type) and issubclass(cls, Source)):
                    raise PluginError(
                        f"plugin {plugin_name!r}: slipstream_sources() returned {cls!r}; "
                        f"expected subclasses of slipstream.sources.Source"
                    )
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {plugin_name!r}: source {cls!r} has no `name`")
                if name in self._sources and self._sources[name] is not cls:
                    raise PluginError(
                        f"source name {name!r} is provided by both plugin "
                        f"{owner['source:' + name]!r} and plugin {plugin_name!r}; "
                        f"uninstall one of them"
                    )
                self._sources[name] = cls
                owner["source:" + name] = plugin_name
        for impl in self._pm.hook.slipstream_stores.get_hookimpls():
            plugin_name = impl.plugin_name
            for cls in _results(impl):
                if not (isinstance(cls, type) and issubclass(cls, CacheStore)):
                    raise PluginError(
                        f"plugin {plugin_name!r}: slipstream_stores() returned {cls!r}; "
                        f"expected subclasses of slipstream.stores.CacheStore"
                    )
                for protocol in cls.protocols:
                    key = "store:" + protocol
                    if protocol in self._stores and self._stores[protocol] is not cls:
                        raise PluginError(
                            f"store protocol {protocol!r} is claimed by both plugin "
                            f"{owner[key]!r} and plugin {plugin_name!r}; uninstall one of them"
                        )
                    self._stores[protocol] = cls
                    owner[key] = plugin_name

    # -- registries ----------------------------------------------------------------------
    def sources(self) -> dict[str, type[Source]]:
        """Every registered source class by name, highest detection priority first."""
        self._ensure_loaded()
        ordered = sorted(self._sources.items(), key=lambda kv: (-kv[1].priority, kv[0]))
        return dict(ordered)

    def stores(self) -> dict[str, type[CacheStore]]:
        """Every registered store class by URL protocol."""
        self._ensure_loaded()
        return dict(self._stores)

    def plugins(self) -> list[PluginInfo]:
        """What is loaded, from which distribution, at which version."""
        self._ensure_loaded()
        infos = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            dist, version = self._dists.get(name, ("(registered directly)", ""))
            sources = tuple(
                n for n, c in self._sources.items()
                if _provided_by(self._pm, plugin, "slipstream_sources", c)
            )
            stores = tuple(
                p for p, c in self._stores.items()
                if _provided_by(self._pm, plugin, "slipstream_stores", c)
            )
            infos.append(
                PluginInfo(
                    name=name,
                    module=getattr(plugin, "__name__", type(plugin).__name__),
                    distribution=dist,
                    version=version,
                    sources=sources,
                    stores=stores,
                )
            )
        return infos


def _results(impl: Any) -> list[Any]:
    """What a plugin's registry hook returned (None counts as nothing)."""
    return list(impl.function() or ())


def _provided_by(pm: pluggy.PluginManager, plugin: object, hook: str, cls: type) -> bool:
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin is plugin and cls in (impl.function() or ()):
            return True
    return False


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_plugin_host() -> PluginHost:
    """The process-wide plugin host, created (not loaded) on first call."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host
