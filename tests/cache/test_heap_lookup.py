"""A heap's per-batch lookups (``ByteHeap.chunks_of`` and ``locate``, native since they
run once per batch under the GIL) against what the offsets and sizes say, with values
inside one chunk, spanning two, and spanning many."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipstream import build_cache
from slipstream.decode.kernel import load as native
from slipstream.sources import open_source

from ..decode.test_kernel_fuzz import FUZZ


@pytest.fixture(params=[1000, 9000, 1 << 20], ids=["values span many", "some span two",
                                                    "one chunk"])
def heap(request, image_folder, cache_root):
    source = open_source(str(image_folder))
    cache = build_cache(source, cache_root, progress=False, heap_chunk_bytes=request.param)
    return cache.column("image").heap, cache


def _expected_chunks(heap, indices):
    out = set()
    for i in indices:
        off, size = int(heap.offsets[i]), max(int(heap.sizes[i]), 1)
        out |= set(range(off // heap.chunk_bytes, (off + size - 1) // heap.chunk_bytes + 1))
    return sorted(out)


def test_chunks_of_names_every_chunk_a_value_touches(heap):
    heap, _ = heap
    rng = np.random.default_rng(0)
    n = len(heap.offsets)
    for size in (1, 3, n):
        indices = rng.permutation(n)[:size]
        assert heap.chunks_of(indices) == _expected_chunks(heap, indices)
    assert heap.chunks_of(np.array([], np.int64)) == []


def test_locate_gives_each_values_bytes(heap):
    heap, cache = heap
    indices = np.random.default_rng(1).permutation(len(heap.offsets))
    addresses, keep = heap.locate(indices)
    assert addresses.dtype == np.uint64 and len(addresses) == len(indices)
    for k, i in enumerate(indices.tolist()):
        got = ctypes.string_at(int(addresses[k]), int(heap.sizes[i]))
        assert got == cache[i]["image"], f"sample {i}"
    del keep


def test_lookups_refuse_an_index_out_of_range(heap):
    heap, _ = heap
    n = len(heap.offsets)
    with pytest.raises(IndexError, match=f"index {n} out of range"):
        heap.chunks_of(np.array([0, n]))
    with pytest.raises(IndexError, match="index -1 out of range"):
        heap.locate(np.array([-1]))


def test_gather_makes_the_kernels_table(heap):
    """``BatchSamples.gather`` (one native call): each sample's address, size, codec,
    height and width, and the samples the kernel leaves to Python."""
    from slipstream.cache import Codec
    from slipstream.decoders import BatchSamples

    heap, cache = heap
    col = cache.column("image")
    indices = np.random.default_rng(2).permutation(len(heap.offsets))
    samples = BatchSamples.gather(col, indices)
    assert samples.table.shape == (5, len(indices)) and samples.table.dtype == np.uint64
    np.testing.assert_array_equal(samples.table[1], heap.sizes[indices])
    np.testing.assert_array_equal(samples.codecs, col.codecs[indices])
    np.testing.assert_array_equal(samples.heights, col.heights[indices])
    np.testing.assert_array_equal(samples.widths, col.widths[indices])
    for k, i in enumerate(indices.tolist()):
        got = ctypes.string_at(int(samples.table[0, k]), int(heap.sizes[i]))
        assert got == cache[i]["image"], f"sample {i}"
    native = np.isin(col.codecs[indices], [Codec.JPEG, Codec.YUV420])
    assert samples.python_path == np.flatnonzero(~native).tolist()


@FUZZ
@given(data=st.data(), chunk=st.integers(1, 5000), n_values=st.integers(1, 60))
def test_native_lookups_fuzz(data, chunk, n_values):
    """Arbitrary heaps (any value sizes, the chunk size small or large) and indices, the
    native lookups against plain arithmetic; out-of-range indices and unmapped chunks are
    errors, never reads (the sanitizer session runs this)."""
    sizes = np.array(data.draw(st.lists(st.integers(0, 3 * chunk), min_size=n_values,
                                        max_size=n_values)), np.uint32)
    offsets = np.zeros(n_values, np.uint64)
    offsets[1:] = np.cumsum(sizes[:-1], dtype=np.uint64)
    n_chunks = max(1, -(-int(sizes.sum()) // chunk))
    indices = np.array(data.draw(st.lists(st.integers(-2, n_values + 1), max_size=40)),
                       np.int64)
    lib = native()
    if ((indices < 0) | (indices >= n_values)).any():
        with pytest.raises(IndexError, match="out of range"):
            lib.heap_chunks(offsets, sizes, indices, chunk, n_chunks)
        return
    want = set()
    for i in indices.tolist():  # an empty value touches no chunk
        off, size = int(offsets[i]), int(sizes[i])
        want |= set(range(off // chunk, (off + size - 1) // chunk + 1)) if size else set()
    assert lib.heap_chunks(offsets, sizes, indices, chunk, n_chunks) == sorted(want)
    # fake chunk addresses: the lookups only add to them, never read through them
    bases = np.arange(1, n_chunks + 1, dtype=np.uint64) << np.uint64(32)
    mapped = data.draw(st.lists(st.booleans(), min_size=n_chunks, max_size=n_chunks))
    bases[~np.array(mapped)] = 0
    addresses = np.zeros(len(indices), np.uint64)
    first = [int(offsets[i]) // chunk for i in indices.tolist()]
    if any(sizes[i] and (c >= n_chunks or not mapped[c]) for c, i in zip(first, indices)):
        with pytest.raises(RuntimeError, match="not mapped"):
            lib.heap_locate(offsets, sizes, indices, chunk, bases, addresses)
        return
    straddling = lib.heap_locate(offsets, sizes, indices, chunk, bases, addresses)
    for k, i in enumerate(indices.tolist()):
        start = int(offsets[i]) % chunk
        if sizes[i]:
            assert int(addresses[k]) == int(bases[first[k]]) + start
        else:  # somewhere valid, never address 0
            assert int(addresses[k]) != 0
        assert (k in straddling) == (start + int(sizes[i]) > chunk)


def test_stat_files_gives_file_stamps(tmp_path):
    """The change check's one-call ``stat()``: the stamp ``file_stamp`` gives, None for a
    missing file, an error naming the path for anything else."""
    from slipstream.cache.arrays import file_stamp

    here = tmp_path / "chunk"
    here.write_bytes(b"x" * 100)
    got = native().stat_files([str(here), str(tmp_path / "gone")])
    assert got == [file_stamp(here), None]
    with pytest.raises(NotADirectoryError, match="chunk"):
        native().stat_files([str(here / "below")])
    with pytest.raises(TypeError):
        native().stat_files([here])


def test_a_heap_claiming_a_tiny_chunk_size_is_refused_not_listed():
    """A damaged heap's metadata may claim chunks of a few bytes: its values are refused by
    name instead of listed chunk by chunk (which would take as long as the claim is big)."""
    offsets, sizes = np.array([0], np.uint64), np.array([1 << 21], np.uint32)
    with pytest.raises(ValueError, match="implausible"):
        native().heap_chunks(offsets, sizes, np.array([0], np.int64), 1, 1 << 22)
