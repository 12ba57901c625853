"""The plugin host: built-ins arrive through entry points, bad plugins are named."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest

from slipstream.cli import main as cli_main
from slipstream.errors import PluginError
from slipstream.hookspecs import hookimpl
from slipstream.location import Location
from slipstream.plugins import ENTRY_POINT_GROUP, PluginHost
from slipstream.sources import Detection, Source
from slipstream.sources.imagefolder import ImageFolderSource


def test_builtins_are_registered_through_the_projects_entry_points():
    eps = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["imagefolder"] == "slipstream.sources.imagefolder"
    assert eps["tar"] == "slipstream.sources.tar"
    host = PluginHost()
    infos = {i.name: i for i in host.plugins()}
    assert infos["imagefolder"].distribution == "slipstream"
    assert infos["imagefolder"].sources == ("imagefolder",)
    assert infos["local-store"].stores == ("file", "local")
    priorities = [cls.priority for cls in host.sources().values()]
    assert priorities == sorted(priorities, reverse=True)  # detection order
    assert list(host.sources()).index("tar") < list(host.sources()).index("imagefolder")


def test_entry_points_load_lazily():
    host = PluginHost()
    assert host.manager.list_name_plugin() == []  # nothing imported until needed
    host.sources()
    assert host.manager.list_name_plugin()


class _Dummy(Source):
    name = "imagefolder"  # clashes with the built-in

    @classmethod
    def detect(cls, location: Location) -> Detection:
        return Detection.no("never")

    fields = ()  # type: ignore[assignment]

    def __len__(self) -> int:
        return 0

    def fingerprint(self):
        return None

    def read(self, index):
        raise IndexError(index)


class _ClashingPlugin:
    @hookimpl
    def slipstream_sources(self):
        return [_Dummy]


class _BrokenPlugin:
    @hookimpl
    def slipstream_sources(self):
        return [object]


def test_duplicate_source_name_names_both_plugins():
    host = PluginHost()
    host.sources()
    with pytest.raises(PluginError, match="'imagefolder' is provided by both plugin "
                                          "'imagefolder' and plugin 'clash'"):
        host.register(_ClashingPlugin(), name="clash")


def test_plugin_returning_non_source_is_named():
    host = PluginHost(load_entry_points=False)
    host.register(_BrokenPlugin(), name="broken")
    with pytest.raises(PluginError, match="plugin 'broken'.*expected subclasses"):
        host.sources()


def test_unknown_hook_fails_at_registration():
    class Typo:
        @hookimpl
        def slipstream_sourcez(self):
            return []

    host = PluginHost(load_entry_points=False)
    with pytest.raises(Exception, match="slipstream_sourcez"):
        host.register(Typo(), name="typo")


def test_cli_plugins_lists_distribution_and_version(capsys):
    assert cli_main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    from slipstream import __version__

    assert rows["tar"]["distribution"] == "slipstream"
    assert rows["tar"]["version"] == __version__
    assert rows["tar"]["sources"] == ["tar"]
    assert ImageFolderSource.name in rows


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(monkeypatch):
    """A fake installed distribution (tests/fixtures/broken_plugin) whose entry point
    imports a module that is not installed."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "fixtures" / "broken_plugin"))
    host = PluginHost()
    with pytest.raises(PluginError) as info:
        host.sources()
    message = str(info.value)
    assert "plugin 'broken'" in message
    assert "broken = 'slipstream_broken_plugin'" in message
    assert "distribution slipstream-broken-plugin 0.1" in message
    assert "slipstream_dependency_that_is_not_installed" in message
    assert "pip uninstall slipstream-broken-plugin" in message


def test_sdk_module_exports_what_plugin_authors_need():
    import slipstream.plugin as sdk
    from slipstream.testing import SourceTests, StoreTests

    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    assert sdk.SourceTests is SourceTests and sdk.StoreTests is StoreTests
    assert sdk.hookimpl is hookimpl and sdk.Source is Source
