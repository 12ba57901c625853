"""A conformance kit: the source and store contracts as pytest tests a plugin author
subclasses (:class:`SourceTests` below; :class:`StoreTests` gets one ``store`` fixture, see
``docs/plugins.md``).

Write a small dataset, say what its samples are, and inherit the tests::

    # tests/test_my_source.py  (in your plugin's repository)
    import pytest
    from slipstream.testing import SourceTests

    class TestMySource(SourceTests):
        source_name = "mysource"  # the name your Source subclass registers

        @pytest.fixture
        def source_url(self, tmp_path):
            ...  # write a dozen samples under tmp_path
            return str(tmp_path / "data")

        @pytest.fixture
        def expected_samples(self, source_url):
            return [{"image": jpeg_bytes, "label": 3}, ...]  # every sample, in order

Run ``pytest`` and every check of the contract runs against your source: registration
through the plugin host and auto-detection, ``len`` and ``fields`` (each value of the
declared kind), ``read`` (equal to the expected samples, repeatable, out-of-range
refused), ``iter_samples`` (every index once, equal to ``read``, on one or several
threads, no threads left behind), a JSON fingerprint stable across opens, a JSON
``describe()`` free of credentials, and a cache built from the source that reads back
byte for byte and is found again instead of rebuilt. The built-in sources pass the
same kit (``tests/sources/test_conformance_builtin.py``).

The kit needs pytest (``pip install 'slipstream[test]'``); importing it has no side
effects beyond importing slipstream itself.
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..errors import MissingDependencyError

    raise MissingDependencyError(
        "slipstream.testing is a pytest test kit and needs pytest: "
        "pip install 'slipstream[test]'"
    ) from exc

from .source import SourceTests
from .store import StoreTests

__all__ = ["SourceTests", "StoreTests"]
