"""Which samples go in which batch: one global order per (seed, epoch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EpochSampler"]


@dataclass(frozen=True)
class EpochSampler:
    """A global permutation from ``(seed, epoch)``, cut into batches.

    Under distributed training each rank takes its stride of the global order (padded
    so every rank gets the same number of batches); the global order itself never
    depends on the world size.
    """

    num_samples: int
    batch_size: int
    shuffle: bool
    seed: int
    drop_last: bool
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")

    def global_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, epoch])
        return rng.permutation(self.num_samples).astype(np.int64)

    def per_rank(self) -> int:
        """Samples each rank sees in an epoch."""
        n, w = self.num_samples, self.world_size
        if self.drop_last:
            per = n // w
            return per - per % self.batch_size
        return -(-n // w)

    def rank_order(self, epoch: int) -> np.ndarray:
        order = self.global_order(epoch)
        per = self.per_rank()
        if self.world_size > 1 and not self.drop_last and len(order) < per * self.world_size:
            order = np.resize(order, per * self.world_size)  # repeat from the start, cyclically
        return order[self.rank :: self.world_size][:per]

    def __len__(self) -> int:
        per = self.per_rank()
        return per // self.batch_size if self.drop_last else -(-per // self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> list[np.ndarray]:
        """This rank's batches for ``epoch``, from batch ``start`` on."""
        order = self.rank_order(epoch)
        b = self.batch_size
        return [order[i : i + b] for i in range(start * b, len(self) * b, b)]
