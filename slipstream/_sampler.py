"""Which samples go in which batch: one global order per (seed, epoch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EpochSampler", "BlockShuffle", "block_order"]


@dataclass(frozen=True, eq=False)
class BlockShuffle:
    """How a block shuffle groups the samples into chunks: chunk ``c`` holds samples
    ``grouped[chunk_starts[c]:chunk_starts[c + 1]]`` (``grouped`` defaults to
    ``0, 1, 2, ...``: chunks of consecutive samples); a window mixes ``window`` chunks."""

    chunk_starts: tuple[int, ...]
    window: int
    grouped: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"a block shuffle window holds at least 1 chunk, got {self.window}")

    @classmethod
    def from_chunk_ids(cls, chunk_of: np.ndarray, window: int) -> BlockShuffle:
        """The grouping of samples whose chunk numbers are ``chunk_of`` (in any order)."""
        grouped = np.argsort(chunk_of, kind="stable").astype(np.int64)
        ids = np.asarray(chunk_of)[grouped]
        starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1 if len(ids) else np.zeros(0, np.int64)
        return cls(tuple([0, *starts.tolist()] if len(ids) else []), window, grouped)


def block_order(num_samples: int, blocks: BlockShuffle, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(num_samples)`` that reads few chunks at a time: the chunks
    in a random order, cut into windows of ``blocks.window`` chunks, each window's samples
    in a random order. Two samples of one chunk land in one window, so where a full
    shuffle puts them (N+1)/3 apart on average, this puts them (W+1)/3 apart, W being the
    samples of a window (docs/streaming.md)."""
    starts = np.asarray(blocks.chunk_starts, np.int64)
    bounds = np.append(starts, num_samples)
    grouped = (np.arange(num_samples, dtype=np.int64) if blocks.grouped is None
               else blocks.grouped)
    chunk_order = rng.permutation(len(starts))
    parts = []
    for w in range(0, len(chunk_order), blocks.window):
        members = [grouped[bounds[c]:bounds[c + 1]] for c in chunk_order[w:w + blocks.window]]
        parts.append(rng.permutation(np.concatenate(members)))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class EpochSampler:
    """A global permutation from ``(seed, epoch)``, cut into batches.

    Under distributed training each rank takes its stride of the global order (padded
    so every rank gets the same number of batches); the global order itself never
    depends on the world size.

    An epoch can start part-way, at a global position ``offset``: the samples before it
    were served already (by a run at any world size; ``w`` ranks that each took ``k``
    batches of ``b`` served exactly the first ``w·k·b`` samples of the global order).
    The rest is strided over this sampler's ranks by the same rule, so resuming at the
    world size that saved the position continues exactly where it stopped, and resuming
    at another world size serves every remaining sample once (plus the padding).
    """

    num_samples: int
    batch_size: int
    shuffle: bool
    seed: int
    drop_last: bool
    rank: int = 0
    world_size: int = 1
    #: block shuffle (see :func:`block_order`): the first sample of each chunk, and how
    #: many chunks a window mixes; None: a full permutation
    blocks: BlockShuffle | None = None

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")

    def global_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, epoch])
        if self.blocks is not None:
            return block_order(self.num_samples, self.blocks, rng)
        return rng.permutation(self.num_samples).astype(np.int64)

    def per_rank(self, offset: int = 0) -> int:
        """Samples each rank sees in an epoch that starts at global position ``offset``."""
        left, w = max(0, self.num_samples - offset), self.world_size
        if self.drop_last:
            per = left // w
            return per - per % self.batch_size
        return -(-left // w)

    def rank_order(self, epoch: int, offset: int = 0) -> np.ndarray:
        order = self.global_order(epoch)
        per = self.per_rank(offset)
        end = offset + per * self.world_size
        if not self.drop_last and len(order) < end:
            order = np.resize(order, end)  # pad by repeating from the start, cyclically
        return order[offset + self.rank :: self.world_size][:per]

    def num_batches(self, offset: int = 0) -> int:
        """This rank's batches in an epoch that starts at global position ``offset``."""
        per = self.per_rank(offset)
        return per // self.batch_size if self.drop_last else -(-per // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches()

    def batches(self, epoch: int, start: int = 0, offset: int = 0) -> list[np.ndarray]:
        """This rank's batches for ``epoch`` started at global position ``offset``, from
        batch ``start`` on."""
        order = self.rank_order(epoch, offset)
        b = self.batch_size
        return [order[i : i + b] for i in range(start * b, self.num_batches(offset) * b, b)]
