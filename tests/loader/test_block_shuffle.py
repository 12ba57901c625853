"""The block shuffle a streamed cache uses: a permutation, deterministic for (seed, epoch),
the same global order at any world size, and as far from a full shuffle as its window
says (the expected distance between two samples of one chunk, docs/streaming.md)."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream._sampler import BlockShuffle, EpochSampler, block_order


def uneven_chunks(n: int, seed: int = 0) -> tuple[int, ...]:
    sizes = np.random.default_rng(seed).integers(3, 12, n)
    return tuple(int(s) for s in np.concatenate([[0], np.cumsum(sizes)[:-1]]))


def sampler(n: int, blocks: BlockShuffle, **kw) -> EpochSampler:
    return EpochSampler(n, kw.pop("batch_size", 8), True, kw.pop("seed", 5), False,
                        blocks=blocks, **kw)


def test_a_block_order_is_a_permutation_that_keeps_each_window_together():
    starts = uneven_chunks(40)
    n = starts[-1] + 7
    blocks = BlockShuffle(starts, window=3)
    order = block_order(n, blocks, np.random.default_rng([1, 0]))
    assert sorted(order.tolist()) == list(range(n))
    chunk_of = np.searchsorted(np.asarray(starts), order, side="right") - 1
    # walking the order, each window of 3 chunks is finished before the next starts
    seen_windows: list[set[int]] = []
    for c in chunk_of.tolist():
        if not seen_windows or (c not in seen_windows[-1] and len(seen_windows[-1]) == 3):
            assert all(c not in w for w in seen_windows), f"chunk {c} came back later"
            seen_windows.append(set())
        seen_windows[-1].add(c)
    assert len(seen_windows) == -(-len(starts) // 3)


def test_the_order_depends_on_seed_and_epoch_only():
    starts = uneven_chunks(30)
    n = starts[-1] + 5
    blocks = BlockShuffle(starts, window=4)
    a = sampler(n, blocks).global_order(3)
    assert np.array_equal(a, sampler(n, blocks).global_order(3))
    assert not np.array_equal(a, sampler(n, blocks).global_order(4))
    assert not np.array_equal(a, sampler(n, blocks, seed=6).global_order(3))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_share_out_the_same_global_order_at_any_world_size(world):
    starts = uneven_chunks(25)
    n = starts[-1] + 9
    blocks = BlockShuffle(starts, window=2)
    one = sampler(n, blocks).rank_order(1)
    ranks = [sampler(n, blocks, rank=r, world_size=world).rank_order(1) for r in range(world)]
    interleaved = np.empty(sum(len(r) for r in ranks), np.int64)
    for r, part in enumerate(ranks):
        interleaved[r::world] = part
    assert np.array_equal(interleaved[:n], one)


def test_resuming_at_a_position_continues_the_same_order():
    starts = uneven_chunks(20)
    n = starts[-1] + 4
    blocks = BlockShuffle(starts, window=3)
    full = np.concatenate(sampler(n, blocks).batches(2))
    rest = np.concatenate(sampler(n, blocks).batches(2, offset=40))
    assert np.array_equal(rest, full[40:])


def test_mean_distance_between_samples_of_one_chunk_matches_the_formula():
    """With equal chunks of m samples and windows of w chunks (W = w*m samples), two
    samples of one chunk are (W+1)/3 apart on average; a full shuffle of N samples puts
    them (N+1)/3 apart. Checked over many epochs, within 4 standard errors."""
    m, chunks, w = 10, 60, 4
    n = m * chunks
    blocks = BlockShuffle(tuple(range(0, n, m)), window=w)
    distances = []
    for epoch in range(300):
        order = block_order(n, blocks, np.random.default_rng([9, epoch]))
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
        pos = position.reshape(chunks, m)  # the positions of each chunk's samples
        i, j = np.triu_indices(m, 1)
        distances.append(np.abs(pos[:, i] - pos[:, j]).ravel())
    d = np.concatenate(distances)
    expected = (w * m + 1) / 3
    stderr = d.std() / np.sqrt(len(d) / (m * (m - 1) / 2))  # pairs of one chunk correlate
    assert abs(d.mean() - expected) < 4 * stderr, (d.mean(), expected)
    assert expected < (n + 1) / 3 / 10  # far closer together than a full shuffle
