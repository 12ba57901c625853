"""Fuzzing the parsers of untrusted bytes (issue #9): FFCV headers and allocation tables,
LitData index and chunk headers, tar members, a cache's metadata and arrays, and the
text files that lay out a Hugging Face dataset.

Every test starts from a real, valid input (the committed FFCV and LitData fixtures, a
tar written by :mod:`tarfile`, a cache built in a temporary directory), mutates it
(integers written over header and table fields, flipped bits, truncation, splices,
random bytes, JSON values replaced by ones of the wrong type, huge, negative or NaN),
then runs the public entry points: open the source, list it, read every sample; open
the cache, read its columns, samples, indexes and summary, verify it. The contract:

- only slipstream's own exceptions (:class:`SlipstreamError` subclasses) escape; any
  other (``KeyError``, ``struct.error``, a numpy error, ``MemoryError``, a JSON or
  Unicode error, a warning, which the test configuration turns into an error) fails;
- no hang: each example runs under a hard time limit (``SIGALRM``, :data:`BUDGET_S`);
- no unbounded allocation: the peak traced by :mod:`tracemalloc` over an example stays
  under :data:`PEAK_BYTES`, so a declared count or size the input cannot hold must be
  refused before anything is allocated.

CI runs 200 derandomized examples per fuzz test (the file takes about 20 s on 2 cores);
a longer run explores fresh random examples (``SLIPSTREAM_FUZZ_EXAMPLES`` also turns off
derandomization)::

    SLIPSTREAM_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/sources/test_fuzz_parsers.py -p no:cacheprovider

Hypothesis keeps no example database and its caches go to the temporary directory
(nothing is written under the repository); a failure prints the edits that made the
input and the ``@reproduce_failure`` line that replays it. After the fuzz tests, one
named case per bug the fuzzing found keeps each fix from regressing.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import tarfile
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from slipstream import SlipstreamDataset
from slipstream.cache import Cache, verify_cache, write_index
from slipstream.errors import (
    CacheCorruptError,
    CacheError,
    SampleError,
    SlipstreamError,
    SourceDetectionError,
)
from slipstream.sources import open_source

# Hypothesis's own caches (constants, Unicode tables) go to the temporary directory, not
# to .hypothesis/ in the working directory: a run writes nothing into the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "slipstream-hypothesis")

FIXTURES = Path(__file__).parents[1] / "fixtures"
LITDATA = FIXTURES / "litdata" / "dataset"

_ENV_EXAMPLES = os.environ.get("SLIPSTREAM_FUZZ_EXAMPLES")
#: Examples per test: few and derandomized in CI, more and random when the env var is set.
EXAMPLES = int(_ENV_EXAMPLES) if _ENV_EXAMPLES else 200
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not _ENV_EXAMPLES,
    database=None,
    deadline=None,  # BUDGET_S below interrupts a slow example instead of timing it afterwards
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
#: Hard limit on one example (open, list, read everything): a hang fails, it never stalls.
BUDGET_S = 10.0
#: Peak Python/numpy allocation of one example; every input here is under 5 MB.
PEAK_BYTES = 64 << 20
#: Samples read per example (all of them for every valid input used here).
MAX_SAMPLES = 64


# -- the oracle -------------------------------------------------------------------------
class ParseTimeout(Exception):
    """An example ran past :data:`BUDGET_S`."""


@contextmanager
def limits(seconds: float, peak_bytes: int) -> Iterator[None]:
    """Fail the block if it runs past ``seconds`` (interrupted: a hang fails, it never
    stalls) or its peak traced allocation exceeds ``peak_bytes``."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise ParseTimeout(f"still running after {seconds} s: a hang on this input")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= peak_bytes, f"allocated {peak:,} bytes at peak (limit {peak_bytes:,})"


@contextmanager
def bounded() -> Iterator[None]:
    """Run the block under the fuzzing contract: SlipstreamErrors are expected answers;
    any other exception, a run past BUDGET_S or a peak allocation over PEAK_BYTES fails."""
    with limits(BUDGET_S, PEAK_BYTES), suppress(SlipstreamError):
        yield


# -- mutations --------------------------------------------------------------------------
# Hypothesis prints a failing example's arguments and draws; these classes print how
# an input was made instead of its (up to megabytes of) bytes.
class Seed:
    """A valid input to mutate, and the offsets of its header and table fields."""

    def __init__(self, name: str, data: bytes, hot: Sequence[int] = ()) -> None:
        self.name, self.data, self.hot = name, data, list(hot)

    def __repr__(self) -> str:
        return f"Seed({self.name!r}, {len(self.data)} bytes)"


class Blob:
    """Bytes to feed a parser, with the edits that made them."""

    def __init__(self, data: bytes, how: Sequence[str]) -> None:
        self.data, self.how = bytes(data), tuple(how)

    def __repr__(self) -> str:
        return f"Blob({len(self.data)} bytes: {'; '.join(self.how)})"


class Edited:
    """A JSON value with the edits that made it."""

    def __init__(self, value: Any, how: Sequence[str]) -> None:
        self.value, self.how = value, tuple(how)

    def __repr__(self) -> str:
        return f"Edited({'; '.join(self.how)})"


def random_bytes(max_size: int) -> st.SearchStrategy[Blob]:
    return st.binary(max_size=max_size).map(lambda b: Blob(b, [f"random {b[:24]!r}..."]))


#: Values written over integer fields: edges of each width, huge counts, sizes.
_INTS = [0, 1, 2, 3, 7, 24, 255, 256, 512, 1041, 4096, 0x7FFF, 0x8000, 0xFFFF, 2**31 - 1,
         2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
_OPS = ("int", "int", "int", "flip", "truncate", "splice", "noise")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, hot: Sequence[int] = ()) -> Blob:
    """``base`` with one to three edits, aimed at the ``hot`` offsets (header and table
    fields) half of the time."""
    data = bytearray(base)
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        op = draw(st.sampled_from(_OPS))
        if hot and draw(st.booleans()):
            at = draw(st.sampled_from(hot)) % len(data)
        else:
            at = draw(st.integers(0, len(data) - 1))
        if op == "int":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.one_of(
                st.sampled_from(_INTS),
                st.integers(-(2**63), -1),  # written as two's complement: a negative field
                st.sampled_from([len(data) - 1, len(data), len(data) + 1, at]),
                st.integers(0, 2**64 - 1),
            ))
            raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            data[at:at + width] = raw[: len(data) - at]
            edits.append(f"u{8 * width}={value & ((1 << (8 * width)) - 1):#x} at {at}")
        elif op == "flip":
            bit = draw(st.integers(0, 7))
            data[at] ^= 1 << bit
            edits.append(f"bit {bit} flipped at {at}")
        elif op == "truncate":
            del data[at:]
            edits.append(f"truncated to {at}")
        elif op == "splice":
            how = draw(st.sampled_from(("delete", "insert", "copy")))
            n = draw(st.integers(1, 64))
            if how == "delete":
                del data[at:at + n]
            elif how == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=n))
            else:
                src = draw(st.integers(0, len(data) - 1))
                data[at:at] = data[src:src + n]
            edits.append(f"{how} {n} at {at}")
        else:
            noise = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(noise)] = noise
            edits.append(f"{noise!r} at {at}")
    return Blob(data, edits)


_WEIRD = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from(_INTS + [-1, -(2**63), 2**64, 2**100]), st.integers(),
    st.floats(),  # NaN and infinities included
    st.text(max_size=12),
    st.sampled_from(["", ".", "..", "../../etc", "/etc/passwd", "a/b", "zarr.json", "c/0",
                     "x" * 300]),
    st.lists(st.integers(-2, 2**40), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@st.composite
def json_edited(draw: st.DrawFn, obj: Any, values: st.SearchStrategy[Any] = _WEIRD) -> Edited:
    """A deep copy of ``obj`` with one to three values replaced (by ``values``: wrong
    types, huge or negative numbers, NaN), deleted or duplicated."""
    obj = copy.deepcopy(obj)
    how = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(obj))))
        if not path:
            obj = draw(values)
            how.append(f"replaced by {obj!r:.60}")
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(("set", "set", "set", "delete", "duplicate")))
        how.append(f"{action} {'/'.join(map(str, path)):.80}")
        if action == "set":
            parent[key] = draw(values)
            how[-1] += f" = {parent[key]!r:.60}"
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            parent[key] = [parent[key], copy.deepcopy(parent[key])]
    return Edited(obj, how)


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# -- entry points -------------------------------------------------------------------------
def read_everything(url: str, **options: Any) -> None:
    """Open a source and read what a build reads: fields, length, identity, every sample."""
    with open_source(url, **options) as src:
        assert src.fields
        json.dumps(src.fingerprint())
        json.dumps(src.describe())
        some = range(min(len(src), MAX_SAMPLES))
        samples = [src.read(i) for i in some]
        samples += [sample for _, sample in src.iter_samples(some, num_threads=1)]
        for i in some:
            src.sample_name(i)
        for sample in samples:
            for value in sample.values():
                if isinstance(value, str):
                    value.encode("utf-8")  # what a cache stores of it


@pytest.fixture
def memfs() -> Iterator[Any]:
    """fsspec's in-memory filesystem (a remote one to slipstream), emptied after the test."""
    fs = fsspec.filesystem("memory")
    yield fs
    if fs.exists("/fuzz"):
        fs.rm("/fuzz", recursive=True)


# -- FFCV -------------------------------------------------------------------------------
FFCV_KINDS = ("jpg", "raw", "mixed")


@pytest.fixture(scope="module")
def betons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    """Each FFCV fixture's bytes and its hot offsets: header, field descriptors, every
    metadata-table member, every allocation-table entry."""
    out = {}
    for kind in FFCV_KINDS:
        data = gzip.decompress((FIXTURES / "ffcv" / f"{kind}.beton.gz").read_bytes())
        (num_fields,) = struct.unpack_from("<H", data, 2)
        num_samples, alloc_ptr = struct.unpack_from("<QQ", data, 8)
        hot = [0, 2, 4, 8, 16]
        for k in range(num_fields):
            desc = 24 + 1041 * k
            hot += [desc, desc + 1, desc + 17, desc + 25, desc + 33, desc + 17 + 256,
                    desc + 17 + 264]
        path = tmp_path_factory.mktemp("ffcv") / f"{kind}.beton"
        path.write_bytes(data)
        with open_source(str(path)) as src:
            row = src._metadata.dtype  # white box: where each metadata member lies
        start = 24 + 1041 * num_fields
        for i in range(num_samples):
            for name in row.names:
                sub, off = row.fields[name][:2]
                members = [f[1] for f in sub.fields.values()] if sub.fields else [0]
                hot += [start + i * row.itemsize + off + m for m in members]
        hot += list(range(alloc_ptr, len(data), 8))
        out[kind] = Seed(f"{kind}.beton", data, hot)
    return out


_DTYPES = st.sampled_from(["<f4", "|O", "O", "<f8", "|V0", "V8", "|S5", "<U3", "<M8[s]", "?",
                           "<c16", "x", "", "<f4 ", ">i2", "|b1"])


@st.composite
def ffcv_array_args(draw: st.DrawFn, base: bytes) -> Blob:
    """An FFCV file whose NDArrayField arguments (shape, dtype description) are edited."""
    data = bytearray(base)
    (num_fields,) = struct.unpack_from("<H", data, 2)
    args = next(24 + 1041 * k + 17 for k in range(num_fields) if data[24 + 1041 * k] == 4)
    shape = list(struct.unpack_from("<32Q", data, args))
    (length,) = struct.unpack_from("<Q", data, args + 256)
    how = []
    if draw(st.booleans()):
        edit = draw(json_edited(json.loads(data[args + 264:args + 264 + length]),
                                st.one_of(_DTYPES, _WEIRD)))
        descr = json.dumps(edit.value, allow_nan=True).encode()[:760]
        data[args + 264:args + 1024] = descr.ljust(760, b"\0")
        length = len(descr)
        how += edit.how
    if draw(st.booleans()):
        k = draw(st.integers(0, 31))
        shape[k] = draw(st.sampled_from(_INTS))
        how.append(f"shape[{k}] = {shape[k]}")
    if draw(st.booleans()):
        length = draw(st.sampled_from(_INTS))
        how.append(f"type_length = {length}")
    struct.pack_into("<32QQ", data, args, *shape, length)
    return Blob(data, how or ["rewritten as is"])


@FUZZ
@given(data=st.data())
def test_ffcv(betons, tmp_path, memfs, data):
    seed = betons[data.draw(st.sampled_from(FFCV_KINDS))]
    blob = data.draw(st.one_of(mutated(seed.data, seed.hot), mutated(seed.data, seed.hot),
                               ffcv_array_args(betons["jpg"].data), random_bytes(4096))).data
    if data.draw(st.booleans()):
        path = tmp_path / "fuzz.beton"
        path.write_bytes(blob)
        url = str(path)
    else:  # a remote file: the page-at-a-time reading path
        memfs.pipe("/fuzz/fuzz.beton", blob)
        url = "memory://fuzz/fuzz.beton"
    with bounded():
        read_everything(url)


# -- LitData ------------------------------------------------------------------------------
_LIT_FORMATS = ["bytes", "pil", "jpeg", "int", "bool", "float", "str", "text", "image:png",
                "numpy", "tensor", ""]


@pytest.fixture(scope="module")
def litdata_files() -> dict[str, Seed]:
    """The fixture dataset's files, each chunk with its hot offsets: the item count, the
    offsets table, each item's leaf sizes and each PIL leaf's header."""
    out = {}
    for path in sorted(LITDATA.iterdir()):
        data = path.read_bytes()
        hot: list[int] = []
        if path.suffix == ".bin":
            (n,) = struct.unpack_from("<I", data, 0)
            offsets = struct.unpack_from(f"<{n + 1}I", data, 4)
            hot = [0, *range(4, 8 + 4 * n, 4)]
            for start in offsets[:-1]:
                sizes = struct.unpack_from("<6I", data, start)
                hot += range(start, start + 24, 4)
                leaf = start + 24
                for j, size in enumerate(sizes):
                    if j in (1, 2):  # the PIL leaves: width, height, mode length, mode
                        hot += [leaf, leaf + 4, leaf + 8, leaf + 12]
                    leaf += size
        out[path.name] = Seed(path.name, data, hot)
    return out


@st.composite
def litdata_index(draw: st.DrawFn, raw: bytes) -> Blob:
    index = json.loads(raw)
    part = draw(st.sampled_from(("index", "data_format", "data_spec", "bytes")))
    if part == "index":
        edit = draw(json_edited(index))
        return Blob(dump_json(edit.value), edit.how)
    if part == "data_format":
        values = st.one_of(st.sampled_from(_LIT_FORMATS), _WEIRD)
        edit = draw(json_edited(index["config"]["data_format"], values))
        index["config"]["data_format"] = edit.value
    elif part == "data_spec":
        edit = draw(json_edited(json.loads(index["config"]["data_spec"])))
        index["config"]["data_spec"] = json.dumps(edit.value, allow_nan=True)
    else:
        return draw(mutated(raw))
    return Blob(dump_json(index), [f"{part}: {h}" for h in edit.how])


@FUZZ
@given(data=st.data())
def test_litdata(litdata_files, tmp_path, memfs, data):
    files = {name: seed.data for name, seed in litdata_files.items()}
    seed = litdata_files[data.draw(st.sampled_from(sorted(files)))]
    if seed.name == "index.json":
        files[seed.name] = data.draw(litdata_index(seed.data)).data
    else:
        files[seed.name] = data.draw(st.one_of(mutated(seed.data, seed.hot),
                                               random_bytes(512))).data
    if data.draw(st.booleans()):
        root = tmp_path / "ds"
        root.mkdir(exist_ok=True)
        for name, blob in files.items():
            (root / name).write_bytes(blob)
        url = str(root)
    else:  # a remote dataset: the whole-chunk reading path
        for name, blob in files.items():
            memfs.pipe(f"/fuzz/ds/{name}", blob)
        url = "memory://fuzz/ds"
    with bounded():
        read_everything(url)


# -- tar ----------------------------------------------------------------------------------
_TAR_FIELDS = (0, 100, 108, 116, 124, 136, 148, 156, 157, 257, 263, 265, 297, 329, 337, 345)


@pytest.fixture(scope="module")
def tar_archive() -> tuple[Seed, list[int]]:
    """A small ImageFolder tar (ustar and pax members, a directory, a long name) with the
    offsets of its header blocks and of every field in them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("train/cat")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        names = ["train/cat/0.jpg", "train/cat/1.png", "train/dog/0.jpg",
                 "train/dog/" + "long-name-" * 12 + ".jpg", "train/dog/é.jpg", "README.txt"]
        for i, name in enumerate(names):
            payload = b"\xff\xd8\xff\xe0" + bytes([i]) * (100 + 700 * i)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        heads = sorted({h for m in tf.getmembers() for h in (m.offset, m.offset_data - 512)})
    return Seed("archive.tar", data, [h + f for h in heads for f in _TAR_FIELDS]), heads


_TAR_NUMBERS = {100: 8, 108: 8, 116: 8, 124: 12, 136: 12}  # mode, uid, gid, size, mtime
_TAR_TEXT = {0: 100, 157: 100, 257: 6, 345: 155}  # name, linkname, magic, prefix


def _tar_number(value: int, width: int, base256: bool) -> bytes:
    """``value`` as a tar header number: octal digits, or GNU base-256 (0x80 or 0xff lead)."""
    if base256:
        lead = b"\xff" if value < 0 else b"\x80"
        return lead + (value % (1 << (8 * (width - 1)))).to_bytes(width - 1, "big")
    return (b"%o" % abs(value))[-(width - 1):].rjust(width - 1, b"0") + b"\0"


@st.composite
def tar_header_edits(draw: st.DrawFn, base: bytes, heads: Sequence[int]) -> Blob:
    """``base`` with header fields rewritten as tar writes them (octal or base-256 numbers,
    type flags, names), checksums fixed, so that tarfile accepts the headers."""
    data = bytearray(base)
    how = []
    for _ in range(draw(st.integers(1, 3))):
        head = draw(st.sampled_from(heads))
        kind = draw(st.sampled_from(("number", "number", "type", "text")))
        if kind == "number":
            at, width = draw(st.sampled_from(sorted(_TAR_NUMBERS.items())))
            value = draw(st.one_of(st.sampled_from(_INTS), st.integers(-(2**40), 2**70),
                                   st.sampled_from([len(base), len(base) - head, -1, -512])))
            raw = _tar_number(value, width, draw(st.booleans()))
            how.append(f"header at {head}: number at {at} = {value}")
        elif kind == "type":
            at, raw = 156, bytes([draw(st.sampled_from(b"0123456789gxLKAVSMDN\0 "))])
            how.append(f"header at {head}: type {raw!r}")
        else:
            at, width = draw(st.sampled_from(sorted(_TAR_TEXT.items())))
            raw = draw(st.sampled_from([b"../evil.jpg", b"/abs/x.jpg", b"a" * width, b"\xff\xfe.jpg",
                                        b"train/x/y.jpg", b"ustar\0", b"", b"train/../../x.jpg"]))
            raw = raw[:width].ljust(width, b"\0")
            how.append(f"header at {head}: text at {at} = {raw.rstrip(bytes(1))!r}")
        data[head + at: head + at + len(raw)] = raw
    return Blob(_fix_checksums(bytes(data), heads), how)


def _fix_checksums(data: bytes, heads: Sequence[int]) -> bytes:
    """Recompute the header checksums a mutation broke, so that tarfile parses further."""
    out = bytearray(data)
    for h in heads:
        block = out[h:h + 512]
        if len(block) < 512:
            continue
        block[148:156] = b" " * 8
        out[h + 148:h + 156] = b"%06o\0 " % sum(block)
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_tar(tar_archive, tmp_path, data):
    seed, heads = tar_archive
    suffix = data.draw(st.sampled_from((".tar", ".tar.gz", "damaged .tar.gz")))
    if suffix == "damaged .tar.gz":  # the compressed stream itself
        suffix = ".tar.gz"
        blob = data.draw(mutated(gzip.compress(seed.data, mtime=0))).data
    else:
        blob = data.draw(st.one_of(tar_header_edits(seed.data, heads),
                                   mutated(seed.data, seed.hot), random_bytes(2048))).data
        if data.draw(st.booleans()):
            blob = _fix_checksums(blob, heads)
        if suffix == ".tar.gz":
            blob = gzip.compress(blob, mtime=0)
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(blob)
    with bounded():
        read_everything(str(path), progress=False)


# -- cache ----------------------------------------------------------------------------------
_DATA_TYPES = st.sampled_from(["uint8", "uint32", "uint64", "int64", "float64", "int8", "bool",
                               "float16", "complex128", "object", "<U3", "V8", "|S4",
                               "datetime64[s]", "uint64 ", "", "foo"])


class CacheSeed:
    """A built cache and each of its files as a :class:`Seed`."""

    def __init__(self, path: Path, files: dict[str, Seed]) -> None:
        self.path, self.files = path, files

    def __repr__(self) -> str:
        return f"CacheSeed({self.path.name}, {len(self.files)} files)"


@pytest.fixture(scope="module")
def cache_seed(tmp_path_factory: pytest.TempPathFactory) -> CacheSeed:
    """A cache of every field kind (the LitData fixture: JPEG, raw RGB and PNG images, int,
    float, str), with a derived format and an index; each file with its hot offsets."""
    ds = SlipstreamDataset(str(LITDATA), cache_dir=tmp_path_factory.mktemp("cache"))
    with ds.build_cache(image_format="yuv420", progress=False, num_threads=1) as cache:
        write_index(cache, ["label"])
        path = cache.path
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            data = p.read_bytes()
            step = 1 if "codecs" in p.parts else 4 if {"sizes", "heights", "widths"} & set(
                p.parts) else 8
            hot = [] if p.name == "zarr.json" or "heap" in p.parts else range(0, len(data), step)
            rel = p.relative_to(path).as_posix()
            files[rel] = Seed(rel, data, hot)
    return CacheSeed(path, files)


@st.composite
def cache_edit(draw: st.DrawFn, files: dict[str, Seed]) -> tuple[str, Blob | None]:
    """One file of the cache rewritten (or deleted: ``None``)."""
    rel = draw(st.sampled_from(sorted(files)))
    seed = files[rel]
    if rel == "zarr.json" and draw(st.integers(0, 3)):  # mostly the manifest's attributes
        meta = json.loads(seed.data)
        edit = draw(json_edited(meta["attributes"]["slipstream"]))
        meta["attributes"]["slipstream"] = edit.value
        return rel, Blob(dump_json(meta), edit.how)
    if rel.endswith("zarr.json") and draw(st.booleans()):
        edit = draw(json_edited(json.loads(seed.data), st.one_of(_DATA_TYPES, _WEIRD)))
        return rel, Blob(dump_json(edit.value), edit.how)
    how = draw(st.sampled_from(("bytes", "bytes", "bytes", "delete")))
    if how == "delete":
        return rel, None
    return rel, draw(st.one_of(mutated(seed.data, seed.hot), random_bytes(64)))


def read_cache(path: Path) -> None:
    """What a loader and ``slipstream info``/``verify`` read of a cache."""
    with Cache(path) as cache:
        n = len(cache)
        assert isinstance(cache.source, dict) and isinstance(cache.key, str)
        for name in cache.field_names:
            cache.column(name)
        some = range(min(n, MAX_SAMPLES))
        for i in some:
            cache[i]
        for name in cache.image_fields:  # as the loader reads them, by sample index
            for fmt in cache.image_formats:
                col = cache.image_column(name, fmt)
                col.gather(some)
                [(int(col.heights[i]), int(col.widths[i]), int(col.codecs[i])) for i in some]
        for name in cache.index_names:
            index = cache.index(name)
            index.to_dict()
            index.counts()
        cache.info()
    verify_cache(path)


@FUZZ
@given(data=st.data())
def test_cache(cache_seed, data):
    path, files = cache_seed.path, cache_seed.files
    edits = data.draw(st.lists(cache_edit(files), min_size=1, max_size=2))
    # half the time the manifest is rewritten to match the edits, as a hostile cache's
    # would be: the checksums checked at open then pass, and the parsers behind them run
    consistent = data.draw(st.booleans()) and all(rel != "zarr.json" for rel, _ in edits)
    try:
        for rel, blob in edits:
            if blob is None:
                (path / rel).unlink(missing_ok=True)
            else:
                (path / rel).write_bytes(blob.data)
        if consistent:
            meta = json.loads(files["zarr.json"].data)
            manifest = meta["attributes"]["slipstream"]["files"]
            for rel, blob in edits:
                if blob is not None:
                    manifest[rel] = {"size": len(blob.data),
                                     "sha256": hashlib.sha256(blob.data).hexdigest()}
            (path / "zarr.json").write_bytes(dump_json(meta))
        with bounded():
            read_cache(path)
    finally:
        for rel in {rel for rel, _ in edits} | ({"zarr.json"} if consistent else set()):
            (path / rel).write_bytes(files[rel].data)


# -- images: the hostile-input corpus (tests/fixtures/hostile/) -------------------------------
#: Pixels an image may claim in these examples: keeps a decode inside PEAK_BYTES.
FUZZ_MAX_PIXELS = 4_000_000


def _jpeg_hot_offsets(data: bytes) -> list[int]:
    """Where a JPEG's marker segments begin (the frame header's fields among them)."""
    return [i + k for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0, 0xFF)
            for k in range(10)]


@pytest.fixture(scope="module")
def image_seeds() -> list[Seed]:
    from ..hostile import hostile_files

    return [Seed(name, data, _jpeg_hot_offsets(data) if name.endswith(".jpg") else range(64))
            for name, data in hostile_files().items()]


def read_image(data: bytes) -> None:
    """What a build and a loader do with an image's bytes: read its header (refusing what
    cannot be decoded, by name), then decode it whole as the stored codec says."""
    import numpy as np

    from slipstream.cache.images import probe_image
    from slipstream.decode.jpeg_frame import read_frame
    from slipstream.decode.libturbojpeg import JpegDecodeError
    from slipstream.decode.pixels import decode_image, thread_state

    read_frame(data)
    info = probe_image(data, "fuzzed", max_pixels=FUZZ_MAX_PIXELS)
    with suppress(JpegDecodeError, OSError, SyntaxError, ValueError):
        decode_image(thread_state(), np.frombuffer(data, np.uint8), info.codec, info.height,
                     info.width)


@FUZZ
@given(data=st.data())
def test_images(image_seeds, data):
    seed = data.draw(st.sampled_from(image_seeds))
    blob = data.draw(mutated(seed.data, seed.hot))
    with bounded():
        read_image(blob.data)


# -- what the fuzzing found: one named case per bug ------------------------------------------
@contextmanager
def refused(error: type[Exception], match: str) -> Iterator[None]:
    """``pytest.raises(error, match=match)``, and fast and small: a count or size the
    input cannot hold is refused before anything is allocated for it."""
    with limits(BUDGET_S / 2, 16 << 20), pytest.raises(error, match=match):
        yield


def _put(data: bytearray, at: int, fmt: str, *values: Any) -> None:
    struct.pack_into(fmt, data, at, *values)


def _ffcv_descr(data: bytearray, k: int, shape: Sequence[int], descr: bytes) -> None:
    args = 24 + 1041 * k + 17
    _put(data, args, "<32QQ", *shape, *[0] * (32 - len(shape)), len(descr))
    data[args + 264:args + 264 + len(descr)] = descr


def _ffcv_last_alloc(data: bytearray, ptr: int, size: int) -> None:
    _put(data, len(data) - 16, "<QQ", ptr, size)


# jpg.beton's fields: image, label, value, blob, array (NDArrayField, index 4), meta
FFCV_BUGS: dict[str, tuple[str, Callable[[bytearray], None], type[Exception], str]] = {
    # was RuntimeWarning (overflow in an int64 add), an error under -W error
    "allocation at 2**63 - 1": ("jpg", lambda d: _ffcv_last_alloc(d, 2**63 - 1, 5),
                                SourceDetectionError, "allocation lies past"),
    # was accepted: an object dtype for consumers to np.frombuffer
    "array of Python objects": ("jpg", lambda d: _ffcv_descr(d, 4, [2], b'[["", "|O"]]'),
                                SourceDetectionError, "Python objects"),
    # was accepted: numpy's product wrapped to 0, every array read as b""
    "array of 2**80 elements": ("jpg", lambda d: _ffcv_descr(d, 4, [2**40, 2**40],
                                                              b'[["", "<f4"]]'),
                                SourceDetectionError, "more than the whole file"),
    # was accepted: the second field's values overwrote the first's in every sample
    "two fields named alike": ("jpg", lambda d: d.__setitem__(slice(24 + 1041 * 2 + 1,
                                                                    24 + 1041 * 2 + 17),
                                                              b"label".ljust(16, b"\0")),
                               SourceDetectionError, "repeat a name"),
    # was accepted: a RawImage with no pixels
    "raw image 0 pixels wide": ("raw", lambda d: _put(d, 24 + 1041 * 3 + 1, "<H", 0),
                                SampleError, "raw image of 0x"),
    # refused before: kept as the "declared count" check of issue #9
    "2**40 samples in 4 MB": ("jpg", lambda d: _put(d, 8, "<Q", 2**40),
                              SourceDetectionError, "metadata table"),
}


@pytest.mark.parametrize("case", sorted(FFCV_BUGS))
def test_ffcv_refuses(betons, tmp_path, case):
    kind, edit, error, match = FFCV_BUGS[case]
    data = bytearray(betons[kind].data)
    edit(data)
    path = tmp_path / "bad.beton"
    path.write_bytes(data)
    with refused(error, match):
        read_everything(str(path))


def _lit_index(edit: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, bytes]], None]:
    def apply(files: dict[str, bytes]) -> None:
        index = json.loads(files["index.json"])
        edit(index)
        files["index.json"] = dump_json(index)
    return apply


def _lit_spec(edit: Callable[[list[Any]], Any]) -> Callable[[dict[str, bytes]], None]:
    def apply(index: dict[str, Any]) -> None:
        spec = json.loads(index["config"]["data_spec"])
        edit(spec)
        index["config"]["data_spec"] = json.dumps(spec)
    return _lit_index(apply)


def _lit_gray_header(width: int, height: int) -> Callable[[dict[str, bytes]], None]:
    """Item 0's grayscale PIL leaf (chunk-0-0.bin, after the JPEG and RGB leaves)."""
    def apply(files: dict[str, bytes]) -> None:
        chunk = bytearray(files["chunk-0-0.bin"])
        (start,) = struct.unpack_from("<I", chunk, 4)
        sizes = struct.unpack_from("<6I", chunk, start)
        _put(chunk, start + 24 + sizes[0] + sizes[1], "<2I", width, height)
        files["chunk-0-0.bin"] = bytes(chunk)
    return apply


def _chunk_size(value: Any) -> Callable[[dict[str, bytes]], None]:
    return _lit_index(lambda i: i["chunks"][0].__setitem__("chunk_size", value))


LITDATA_BUGS: dict[str, tuple[Callable[[dict[str, bytes]], None], type[Exception], str]] = {
    # was a pread of 16 TB (MemoryError) when the first sample was sniffed
    "2**40 items in an 11 KB chunk": (_chunk_size(2**40), SourceDetectionError, "fewer than"),
    # was OverflowError from int(inf)
    "chunk_size Infinity": (_chunk_size(float("inf")), SourceDetectionError, "non-negative"),
    # were accepted by int(): a float, a string, a bool; a negative count
    "chunk_size 4.5": (_chunk_size(4.5), SourceDetectionError, "non-negative integer"),
    "chunk_size '4'": (_chunk_size("4"), SourceDetectionError, "non-negative integer"),
    "chunk_size true": (_chunk_size(True), SourceDetectionError, "non-negative integer"),
    "chunk_size -1": (_chunk_size(-1), SourceDetectionError, "non-negative integer"),
    # was AttributeError ('NoneType' object has no attribute 'split')
    "data_format entry null": (_lit_index(lambda i: i["config"]["data_format"].__setitem__(
        0, None)), SourceDetectionError, "data_format must be a list of strings"),
    # was TypeError ('int' object is not iterable)
    "data_format 1": (_lit_index(lambda i: i["config"].__setitem__("data_format", 1)),
                      SourceDetectionError, "data_format must be a list of strings"),
    # was JSONDecodeError
    "data_spec keys not JSON": (_lit_spec(lambda s: s[1].__setitem__("context", ":")),
                                SourceDetectionError, "unreadable data_spec"),
    # was AttributeError ('NoneType' object has no attribute 'get')
    "data_spec node null": (_lit_spec(lambda s: s[1]["children_spec"].__setitem__(0, None)),
                            SourceDetectionError, "unreadable data_spec"),
    # was TypeError (object of type 'int' has no len())
    "data_spec keys a number": (_lit_spec(lambda s: s[1].__setitem__("context", "0")),
                                SourceDetectionError, "data_spec dict has keys 0"),
    # was accepted: the second leaf's values replaced the first's
    "two leaves named alike": (_lit_spec(lambda s: s[1].__setitem__(
        "context", json.dumps(["a", "a", "b", "c", "d", "e"]))),
        SourceDetectionError, "more than once"),
    # was RecursionError
    "index.json nested 100000 deep": (lambda f: f.__setitem__("index.json", b"[" * 100_000),
                                      SourceDetectionError, "not a LitData index"),
    # was a 4 GB allocation in Pillow before "not enough image data"
    "PIL leaf of 65535x65535 pixels": (_lit_gray_header(65535, 65535), SampleError,
                                       r"65535x65535 L image with 432 bytes of pixels "
                                       r"\(expected 4294836225\)"),
    "PIL leaf of 0x0 pixels": (_lit_gray_header(0, 0), SampleError, "no pixels"),
    # was accepted: only the first of the int64's 8 bytes read
    "bool leaf of 8 bytes": (_lit_index(lambda i: i["config"]["data_format"].__setitem__(
        3, "bool")), SampleError, "a bool is 1 byte"),
}


@pytest.mark.parametrize("case", sorted(LITDATA_BUGS))
def test_litdata_refuses(litdata_files, tmp_path, case):
    edit, error, match = LITDATA_BUGS[case]
    files = {name: seed.data for name, seed in litdata_files.items()}
    edit(files)
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    with refused(error, match):
        read_everything(str(tmp_path))


def _tar_member_size(size: int) -> Callable[[bytes, Sequence[int]], bytes]:
    def apply(data: bytes, heads: Sequence[int]) -> bytes:
        out = bytearray(data)
        out[heads[2] + 124:heads[2] + 136] = _tar_number(size, 12, base256=True)
        return _fix_checksums(bytes(out), heads)
    return apply


def _tar_member_name(name: bytes) -> Callable[[bytes, Sequence[int]], bytes]:
    def apply(data: bytes, heads: Sequence[int]) -> bytes:
        out = bytearray(data)
        out[heads[2]:heads[2] + 100] = name.ljust(100, b"\0")
        return _fix_checksums(bytes(out), heads)
    return apply


TAR_BUGS: dict[str, tuple[str, Callable[[bytes, Sequence[int]], bytes], str]] = {
    # was TypeError from tarfile (ord() of an empty read)
    "gzip header cut short": (".tar.gz", lambda d, h: gzip.compress(d)[:3],
                              "not a readable tar archive"),
    # were hangs: tarfile reads through the claimed bytes at the end of the file
    "member of 2**62 bytes": (".tar", _tar_member_size(2**62), "claims 4611686018427387904"),
    "member of 2**62 bytes, gzipped": (".tar.gz", lambda d, h: gzip.compress(
        _tar_member_size(2**62)(d, h)), "more bytes than the archive holds"),
    # was OSError (EINVAL) from os.pread of -1 bytes
    "member of -1 bytes": (".tar", _tar_member_size(-1), "claims -1 bytes"),
    # was accepted: a path that no cache can store (UnicodeEncodeError when writing)
    "member name not UTF-8": (".tar", _tar_member_name(b"train/cat/\xff\xfe.jpg"),
                              "not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(TAR_BUGS))
def test_tar_refuses(tar_archive, tmp_path, case):
    seed, heads = tar_archive
    suffix, edit, match = TAR_BUGS[case]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(edit(seed.data, heads))
    with refused(SampleError, match):
        read_everything(str(path), progress=False)


def _json(rel: str, edit: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        meta = json.loads((root / rel).read_bytes())
        new = edit(meta)
        (root / rel).write_bytes(dump_json(meta if new is None else new))
    return apply


def _attr(key: str, value: Any) -> Callable[[Path], None]:
    return _json("zarr.json", lambda m: m["attributes"]["slipstream"].__setitem__(key, value))


def _manifest(rel: str, entry: Any = None) -> Callable[[Path], None]:
    entry = entry or {"size": 1, "sha256": "0" * 64}
    return _json("zarr.json",
                 lambda m: m["attributes"]["slipstream"]["files"].__setitem__(rel, entry))


def _array(rel: str, **changes: Any) -> Callable[[Path], None]:
    return _json(f"{rel}/zarr.json", lambda m: m.update(changes))


def _chunk(rel: str, fmt: str, *values: Any) -> Callable[[Path], None]:
    """Values written over a chunk, its manifest entry rewritten to match (a hostile cache:
    the checksums pass, the reader's checks of the values must not)."""
    def apply(root: Path) -> None:
        from ..helpers import rewrite_cache_file

        data = bytearray((root / rel).read_bytes())
        _put(data, 0, fmt, *values)
        rewrite_cache_file(root, rel, bytes(data))
    return apply


_HUGE_GRID = {"name": "regular", "configuration": {"chunk_shape": [1]}}

CACHE_BUGS: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    # root attributes: each was a KeyError, TypeError or ValueError from the reader
    "fields not a list": (_attr("fields", "x"), CacheCorruptError, "not a list of fields"),
    "field of kind video": (_attr("fields", [{"name": "image", "kind": "video"}]),
                            CacheCorruptError, "a field is unreadable"),
    "num_samples a string": (_attr("num_samples", "10"), CacheCorruptError, "not a count"),
    "key with a slash": (_attr("key", "../elsewhere"), CacheCorruptError, "not a cache key"),
    "attributes a list": (_json("zarr.json", lambda m: m.__setitem__("attributes", [])),
                          CacheError, "not a slipstream cache"),  # was AttributeError
    "derived entry with no format": (_attr("derived", ["image"]), CacheCorruptError,
                                     "derived"),  # was IndexError in image_formats
    # paths from the manifest: verify read files outside the cache
    "manifest path with ..": (_manifest("../outside"), CacheCorruptError,
                              "not a relative path inside"),
    "manifest path absolute": (_manifest("/etc/hostname"), CacheCorruptError,
                               "not a relative path inside"),
    "index named ../..": (_attr("indexes", ["../../label"]), CacheCorruptError, "indexes"),
    "manifest size a string": (_manifest("label/c/0", {"size": "80", "sha256": "0"}),
                               CacheCorruptError, "manifest entry"),  # was TypeError
    # arrays
    "array of 2**40 values in chunks of 1": (_array("label", shape=[2**40],
                                                    chunk_grid=_HUGE_GRID),
                                             CacheCorruptError,  # was a hang
                                             "more than the 8 its array's metadata allows"),
    "array of 2**40 values in one chunk": (_array("label", shape=[2**40], chunk_grid={
        "name": "regular", "configuration": {"chunk_shape": [2**40]}}), CacheCorruptError,
        "holds 10 values, expected 1099511627776"),  # was np.zeros of 8 TB: MemoryError
    "heap of 2**40 bytes": (_array("name/heap", shape=[2**40], chunk_grid=_HUGE_GRID),
                            CacheCorruptError, "chunk 1 of the heap"),
    "data type object": (_array("label", data_type="object"), CacheCorruptError,
                         "data type 'object'"),  # was ValueError from np.fromfile
    "gzip codec": (_array("label", codecs=[{"name": "gzip"}]), CacheCorruptError,
                   "uncompressed"),  # was accepted: compressed bytes read as values
    "array metadata missing": (lambda r: (r / "label/zarr.json").unlink(), CacheCorruptError,
                               "missing or not JSON"),  # was FileNotFoundError
    "array metadata nested 100000 deep": (lambda r: (r / "label/zarr.json").write_bytes(
        b"[" * 100_000), CacheCorruptError, "not JSON"),  # was RecursionError
    "numeric chunk missing": (lambda r: (r / "label/c/0").unlink(), CacheCorruptError,
                              "chunk 0 of"),  # was read as zeros: every label 0
    "heap offset 2**64 - 1": (_chunk("name/offsets/c/0", "<Q", 2**64 - 1), CacheCorruptError,
                              "past the heap's end"),  # wrapped negative: wrong bytes
    # the label index
    "index samples out of range": (_chunk("_indexes/label/samples/c/0", "<q", 10**6),
                                   CacheCorruptError, "each sample once"),  # IndexError
    "index offsets too short": (_array("_indexes/label/offsets", shape=[2]),
                                CacheCorruptError, "offsets"),  # was IndexError
    # fixed in reader.py (see the report of issue #9)
    "str value not UTF-8": (_chunk("name/heap/c/0", "<B", 0xFF), CacheCorruptError,
                            "not UTF-8"),  # was UnicodeDecodeError
    "derived heap shorter than the field": (lambda r: [_array(f"image/yuv420/{a}", shape=[9])(r)
                                                       for a in ("offsets", "sizes")],
                                            CacheCorruptError, "9 images, but 10"),
    "int column stored as float64": (_array("label", data_type="float64"), CacheCorruptError,
                                     "expected int64"),  # was floats for an int field
}


@pytest.mark.parametrize("case", sorted(CACHE_BUGS))
def test_cache_refuses(cache_seed, tmp_path, case):
    edit, error, match = CACHE_BUGS[case]
    root = tmp_path / cache_seed.path.name
    shutil.copytree(cache_seed.path, root)
    edit(root)
    with refused(error, match):
        read_cache(root)


# -- Hugging Face layout: dataset_dict.json, state.json, README.md's YAML ----------------------
_HF_STATE = {"_data_files": [{"filename": "data-00000-of-00002.arrow"},
                             {"filename": "data-00001-of-00002.arrow"}],
             "_fingerprint": "0123abcd", "_split": "train"}
_HF_README = {"configs": [
    {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"},
                                              {"split": "test", "path": ["data/test-*"]}]},
    {"config_name": "gray", "data_files": "gray/*.parquet"},
    {"config_name": "small", "data_files": {"train": "small/train.parquet"}},
]}
_HF_PARQUET = ["data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet",
               "gray/train-00000-of-00001.parquet", "small/train.parquet",
               "other/validation/0000.parquet"]


def _readme(header: Any) -> str:
    import yaml

    return f"---\n{yaml.safe_dump(header, allow_unicode=True)}---\n# a dataset card\n"


@st.composite
def hf_dataset(draw: st.DrawFn) -> Edited:
    """The text files of a Hugging Face dataset (save_to_disk of a DatasetDict or of one
    split, or parquet files with a README), one of them edited."""
    kind = draw(st.sampled_from(("dict", "split", "parquet")))
    if kind == "dict":
        texts = {"dataset_dict.json": {"splits": ["train", "test"]},
                 "train/state.json": _HF_STATE, "test/state.json": {**_HF_STATE, "_split": None}}
    elif kind == "split":
        texts = {"state.json": _HF_STATE, "dataset_info.json": {"features": {}}}
    else:
        texts = {"README.md": _HF_README}
    name = draw(st.sampled_from(sorted(texts)))
    how = draw(st.sampled_from(("json", "json", "bytes")))
    docs = {n: (_readme(v) if n == "README.md" else json.dumps(v)) for n, v in texts.items()}
    if how == "json":
        edit = draw(json_edited(texts[name]))
        docs[name] = _readme(edit.value) if name == "README.md" else dump_json(edit.value).decode()
        how_made = [f"{name}: {h}" for h in edit.how]
    else:
        blob = draw(mutated(docs[name].encode()))
        docs[name] = blob.data.decode("utf-8", "replace")
        how_made = [f"{name}: {h}" for h in blob.how]
    files = dict.fromkeys(docs, {"type": "file"})
    if kind == "parquet":
        files.update(dict.fromkeys(_HF_PARQUET, {"type": "file"}))
    else:
        prefix = "" if kind == "split" else "train/"
        files.update(dict.fromkeys([f"{prefix}{f['filename']}" for f in _HF_STATE["_data_files"]],
                                   {"type": "file"}))
    return Edited((files, docs), how_made)


@FUZZ
@given(data=st.data())
def test_hf_layout(data):
    from slipstream.sources._hf_layout import find_layout

    files, docs = data.draw(hf_dataset()).value
    with bounded():
        layout = find_layout(files, docs.__getitem__, "/data/hf")
        for config, splits in layout.configs.items():
            assert isinstance(config, str)
            for split, relpaths in splits.items():
                assert isinstance(split, str) and all(isinstance(r, str) for r in relpaths)


HF_BUGS: dict[str, tuple[dict[str, str], str]] = {
    # was AttributeError ('str' object has no attribute 'get')
    "configs a string": ({"README.md": "---\nconfigs: abc\n---\n"}, "not a list"),
    # was TypeError ('bool' object is not iterable)
    "configs true": ({"README.md": "---\nconfigs: true\n---\n"}, "not a list"),
    # was KeyError ('split')
    "data file with no split": ({"README.md": "---\nconfigs:\n- data_files:\n  - path: x/*\n"
                                              "---\n"}, "has no 'split' and 'path'"),
    # was TypeError ('int' object is not iterable)
    "data file pattern a number": ({"README.md": "---\nconfigs:\n- data_files:\n    train: 5\n"
                                                 "---\n"}, "not text or a list"),
    # was ValueError from the YAML date constructor (month 13)
    "YAML date out of range": ({"README.md": "---\nconfigs: 2001-13-01\n---\n"},
                               "unreadable YAML header"),
    # was TypeError ('int' object is not iterable)
    "splits a number": ({"dataset_dict.json": '{"splits": 3}'}, "not a list of split names"),
    # was accepted: an Arrow file read from outside the dataset
    "data file ../..": ({"state.json": '{"_data_files": [{"filename": "../../etc/passwd"}]}'},
                        "not paths inside the dataset"),
}


@pytest.mark.parametrize("case", sorted(HF_BUGS))
def test_hf_layout_refuses(case):
    from slipstream.sources._hf_layout import find_layout

    docs, match = HF_BUGS[case]
    files = dict.fromkeys([*docs, *_HF_PARQUET], {"type": "file"})
    with refused(SourceDetectionError, match):
        find_layout(files, docs.__getitem__, "/data/hf")


def test_hf_text_not_utf8(tmp_path):
    """Was UnicodeDecodeError: README.md and the JSON files are read as UTF-8 text."""
    pytest.importorskip("pyarrow", reason="the Hugging Face source needs pyarrow (hf extra)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    (tmp_path / "README.md").write_bytes(b"---\nconfigs: \xff\n---\n")
    with refused(SourceDetectionError, r"README\.md: not UTF-8 text"):
        open_source(str(tmp_path), source="huggingface")
