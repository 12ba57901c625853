"""``SlipstreamLoader``: batches from a cache, decoded by threads ahead of the consumer."""

from __future__ import annotations

import logging
import math
import numbers
import os
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._crop_params import crop_params
from ._decode_pool import BatchJob, DecodePool
from ._sampler import BlockShuffle, EpochSampler
from .cache import Cache
from .cache.reader import HeapColumn, ImageColumn
from .cache.streamed import BatchPins, is_streamed, pin_batch, read_ahead, stop_read_ahead
from .caching import ensure_cache
from .dataset import SlipstreamDataset
from .decode import kernel
from .decoders import BatchSamples, DecodeCenterCrop, ImageColumnView, ImageDecoder, PackedBytes
from .errors import (
    CacheError,
    InvalidArgumentError,
    MissingDependencyError,
    PipelineError,
    SampleError,
)
from .schema import FieldKind
from .stores.base import CacheStore
from .stores.streaming import local_cache_limit as _local_cache_limit
from .stores.sync import SyncReport, remote_store_for, sync_remote_cache
from .transforms.base import BatchContext, check_stage
from .transforms.basic import ToTorchImage

__all__ = ["SlipstreamLoader", "ON_ERROR_POLICIES"]

Pipelines = Mapping[str, Sequence[Any]]

#: What ``on_error`` accepts: stop at the first sample that fails, or leave it out.
ON_ERROR_POLICIES = ("raise", "skip")

log = logging.getLogger("slipstream.loader")


def _distributed_placement(distributed: bool | None, rank: int | None,
                           world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): explicit values win; else an initialised process group's."""
    dist = torch.distributed
    group_up = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = group_up or rank is not None or world_size is not None
    if not distributed:
        return 0, 1
    if rank is None or world_size is None:
        if not group_up:
            raise InvalidArgumentError(
                "distributed=True needs rank= and world_size=, or an initialised "
                "torch.distributed process group (torch.distributed.init_process_group)"
            )
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise InvalidArgumentError(f"rank {rank} is outside world_size {world_size}")
    return int(rank), int(world_size)


def _shared_seed() -> int:
    """A fresh seed; under an initialised process group, rank 0's, so that every rank
    cuts the same global order."""
    seed = secrets.randbits(63)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [seed]
        dist.broadcast_object_list(box, src=0)
        seed = int(box[0])
    return seed


def _default_threads() -> int:
    """The CPUs this process may run on, shared among the processes of this node.

    Under ``torchrun`` every rank of a node runs the same loader: each takes its share
    (``LOCAL_WORLD_SIZE``) instead of every CPU, so 8 ranks do not run 8× too many threads.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    try:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        local_world = 1
    return max(1, usable // max(1, local_world))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_num_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return _default_threads()
    if not _is_int(num_threads) or num_threads < 1:
        raise InvalidArgumentError(
            f"num_threads must be a positive integer (or None: the usable CPUs divided by "
            f"LOCAL_WORLD_SIZE, here {_default_threads()}), got {num_threads!r}")
    return int(num_threads)


def _check_pipelines(pipelines: Pipelines | None) -> dict[str, list[Any]]:
    """``pipelines`` as lists, each stage checked against the stage contract: an optional
    decoder first, then slipstream batch transforms (``Lambda(fn)`` wraps a plain ``fn``)."""
    if pipelines is None:
        return {}
    if not isinstance(pipelines, Mapping):
        raise PipelineError(f"pipelines must map field names to lists of stages, got "
                            f"{type(pipelines).__name__}")
    out = {}
    for field, stages in pipelines.items():
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise PipelineError(f"pipelines[{field!r}] must be a list of stages, got "
                                f"{type(stages).__name__}")
        for i, stage in enumerate(stages):
            if isinstance(stage, ImageDecoder):
                if i > 0:
                    raise PipelineError(
                        f"pipelines[{field!r}] stage {i}: {stage!r} is a decoder, not a batch "
                        f"transform; a decoder can only be the first stage")
                continue
            check_stage(stage, f"pipelines[{field!r}] stage {i}")
        out[field] = list(stages)
    return out


class _ImagePipeline:
    """One image field's pipeline: a decoder (in threads), then batch transforms."""

    def __init__(self, field: str, stages: Sequence[Any]) -> None:
        if not stages or not isinstance(stages[0], ImageDecoder):
            first = type(stages[0]).__name__ if stages else "nothing"
            raise PipelineError(
                f"pipelines[{field!r}] must start with a decoder (DecodeRandomResizedCrop, "
                f"DecodeCenterCrop, DecodeResizeCrop, DecodeOnly, ReadBytes), got {first}"
            )
        self.field = field
        self.decoder: ImageDecoder = stages[0]
        self.transforms = list(stages[1:])


class SlipstreamLoader:
    """Iterate over a dataset in batches, as fast as the machine allows.

    The first iteration (or first access to :attr:`cache`) finds the dataset's cache or
    builds it, with a progress bar; every epoch reads it memory-mapped. With
    ``remote_cache="s3://bucket/prefix/"`` (plus ``remote_cache_endpoint_url`` for Wasabi
    or MinIO, and ``remote_cache_storage_options`` for s3fs), a cache the team already
    pushed is pulled instead of built, and one built here is pushed;
    :meth:`sync_remote_cache` shares indexes added later (``docs/sharing.md``). With
    ``local_cache_limit="50GB"`` (or ``$SLIPSTREAM_LOCAL_CACHE_LIMIT``) a remote cache
    larger than the limit is streamed instead: training starts at once, chunk files are
    fetched on demand and ahead, and at most the limit is kept on local disk; shuffling
    is then a block shuffle (``docs/streaming.md``).

    Each batch is a dict: each pipeline's output under its name (a pipeline that ends in a dict
    contributes its keys), numeric fields as tensors (``label`` is ``int64``), and
    string fields as lists.

    A pool of ``num_threads`` threads decodes up to ``prefetch - 1`` batches ahead of
    the one being consumed, straight into preallocated batch buffers (pinned when
    ``device`` is CUDA): memory is ``prefetch × batch_size × output size``. Each thread
    hands a slice of a batch to a native kernel that runs without the GIL
    (``docs/architecture.md``). Near the end of an epoch the next epoch's first batches
    start decoding. The threads live as long as the loader; :meth:`close` stops them. A uint8 CPU
    batch that no transform copied is a view of such a buffer and is valid until the
    next batch is requested; ``.clone()`` it to keep it.

    ``seed=None`` draws a seed and records it in :attr:`seed`; with the same seed,
    batches and augmentations repeat exactly. Epochs count up from 0 at each
    ``iter()``; :meth:`set_epoch` chooses the next one; :meth:`state_dict` and
    :meth:`load_state_dict` resume a run mid-epoch.

    A sample that cannot be decoded (corrupt or truncated bytes) raises
    :class:`~slipstream.errors.SampleError` naming its index and source path
    (``on_error="raise"``, the default). With ``on_error="skip"`` the batch comes out
    without it (one sample shorter), a warning names it, and :attr:`skipped` lists the
    epoch's skipped samples (``skipped_total`` counts every epoch's); errors that are not
    about one sample (a missing library, a damaged cache file) still raise.

    Distributed: with an initialised ``torch.distributed`` process group (or explicit
    ``rank``/``world_size``), rank ``r`` of ``w`` takes samples ``r, r+w, r+2w, ...`` of
    the epoch's global order, which does not depend on ``w``; every rank gets the same
    number of batches (without ``drop_last`` the order is padded by repeating its first
    samples; with it, each rank drops the same tail).
    """

    def __init__(
        self,
        dataset: SlipstreamDataset | Cache,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        pipelines: Pipelines | None = None,
        num_threads: int | None = None,
        device: str | torch.device | None = None,
        *,
        prefetch: int = 3,
        image_format: str = "jpeg",
        progress: bool = True,
        distributed: bool | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        remote_cache: str | CacheStore | None = None,
        remote_cache_endpoint_url: str | None = None,
        remote_cache_storage_options: Mapping[str, Any] | None = None,
        on_error: str = "raise",
        local_cache_limit: int | str | None = None,
    ) -> None:
        if on_error not in ON_ERROR_POLICIES:
            raise InvalidArgumentError(f"on_error must be one of {ON_ERROR_POLICIES}, got "
                                       f"{on_error!r}")
        if not _is_int(batch_size) or batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got "
                                       f"{batch_size!r}")
        if not _is_int(prefetch) or prefetch < 2:
            raise InvalidArgumentError(f"prefetch must be an integer of at least 2 (one batch "
                                       f"consumed, one decoding), got {prefetch!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rank, self.world_size = _distributed_placement(distributed, rank, world_size)
        self.seed = _shared_seed() if seed is None else int(seed)
        self.drop_last = drop_last
        self.num_threads = _check_num_threads(num_threads)
        self.device = torch.device(device) if device is not None else None
        self.prefetch = int(prefetch)
        self.image_format = image_format
        self.progress = progress
        self._pipelines_arg = _check_pipelines(pipelines)
        self._cache: Cache | None = dataset if isinstance(dataset, Cache) else None
        #: where the team's caches are shared (None: build locally); see docs/sharing.md
        self.remote_cache: CacheStore | None = remote_store_for(
            remote_cache, remote_cache_endpoint_url, remote_cache_storage_options)
        #: bytes a remote cache streamed from ``remote_cache`` may keep on local disk
        #: (``$SLIPSTREAM_LOCAL_CACHE_LIMIT``; None: pulled whole); see docs/streaming.md
        self.local_cache_limit = _local_cache_limit(local_cache_limit)
        self._shuffle_window: int | None = None  # a block shuffle's, restored by load_state_dict
        self._blocks: BlockShuffle | None = None
        self._epoch = 0
        # Positions are global: samples of the epoch's global order served by all ranks
        # together, which is what lets a run resume at another world size.
        self._start_sample = 0  # where the next iteration starts (a resumed run)
        self._iter_start = 0  # where the iteration in progress started
        self._active: tuple[int, int] | None = None  # (epoch, position) in progress
        self._resumed_at: tuple[int, int] | None = None  # set by load_state_dict
        self._image_pipelines: list[_ImagePipeline] | None = None
        self._spare_slots: list[tuple[dict[str, Any], Any]] = []
        self._pool: DecodePool | None = None  # the decode threads, for the loader's lifetime
        self._handover: _Handover | None = None  # the next epoch's first batches, in flight
        self._other_pipelines: dict[str, list[Any]] = {}
        self.on_error = on_error
        #: the samples left out of the current (or last) epoch under ``on_error="skip"``
        self.skipped: list[SampleError] = []
        #: how many samples ``on_error="skip"`` has left out, over every epoch
        self.skipped_total = 0

    # -- the cache ------------------------------------------------------------------------
    @property
    def cache(self) -> Cache:
        """The dataset's cache, found or built on first use."""
        if self._cache is None:
            assert isinstance(self.dataset, SlipstreamDataset)
            self._cache = ensure_cache(self.dataset, self.image_format, self.remote_cache,
                                       progress=self.progress,
                                       local_cache_limit=self.local_cache_limit)
        return self._cache

    def sync_remote_cache(self) -> SyncReport:
        """Push what the remote copy of the cache lacks (indexes added with
        ``write_index``), pull the indexes others added, and merge the manifests.
        Returns what moved."""
        if self.remote_cache is None:
            raise ValueError("sync_remote_cache() needs a loader made with remote_cache=URL")
        return sync_remote_cache(self.cache, self.remote_cache, progress=self.progress)

    def _resolve_pipelines(self) -> list[_ImagePipeline]:
        if self._image_pipelines is not None:
            return self._image_pipelines
        cache = self.cache
        given = dict(self._pipelines_arg or {})
        unknown = [k for k in given if k not in cache.field_names]
        if unknown:
            raise KeyError(f"pipelines name fields {unknown} that the dataset does not have; "
                           f"its fields are {list(cache.field_names)}")
        image_pipes = []
        for f in cache.fields:
            if f.kind is FieldKind.IMAGE:
                stages = given.get(f.name)
                if stages is None:
                    stages = [DecodeCenterCrop(224), ToTorchImage(self.device)]
                image_pipes.append(_ImagePipeline(f.name, stages))
            elif f.name in given:
                stages = given[f.name]
                if stages and isinstance(stages[0], ImageDecoder):
                    raise PipelineError(f"pipelines[{f.name!r}] starts with a decoder, but "
                                        f"{f.name!r} is a {f.kind.value} field, not an image")
                self._other_pipelines[f.name] = stages
        self._image_pipelines = image_pipes
        return image_pipes

    # -- epochs -----------------------------------------------------------------------------
    def _sampler(self) -> EpochSampler:
        return EpochSampler(len(self.cache), self.batch_size, self.shuffle, self.seed,
                            self.drop_last, self.rank, self.world_size, self._block_shuffle())

    def _block_shuffle(self) -> BlockShuffle | None:
        """A streamed cache is shuffled in windows of chunks that fill a third of its local
        area (the window being read, the next one fetched ahead, and slack), so that an
        epoch fetches each chunk about once (docs/streaming.md)."""
        cache = self.cache
        if not self.shuffle or cache.chunk_source is None:
            return None
        columns = [cache.image_column(p.field, self.image_format)
                   for p in self._resolve_pipelines()]
        if not columns:
            return None
        heap = columns[0].heap
        window = self._shuffle_window
        if window is None:
            per_window = sum(c.heap.chunk_bytes for c in columns)
            window = max(1, (self.local_cache_limit or 0) // 3 // per_window)
        if self._blocks is None or self._blocks.window != window:
            self._blocks = BlockShuffle.from_chunk_ids(heap.offsets // heap.chunk_bytes, window)
        return self._blocks

    def __len__(self) -> int:
        return len(self._sampler())

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its order and augmentations).

        After :meth:`load_state_dict`, setting the restored epoch keeps the restored
        position, so the usual ``for e in range(start, E): loader.set_epoch(e)`` resumes
        mid-epoch instead of replaying it.
        """
        epoch = int(epoch)
        if self._resumed_at is not None and self._resumed_at[0] == epoch:
            self._epoch, self._start_sample = self._resumed_at
        else:
            self._epoch, self._start_sample = epoch, 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will run."""
        return self._epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, start = self._epoch, self._start_sample
        self._epoch, self._start_sample = epoch + 1, 0
        self._iter_start = start
        self._active = (epoch, start)
        self._resumed_at = None
        self.skipped = []
        sampler = self._sampler()
        if start == 0 and len(sampler) == 0:
            per_rank = sampler.num_samples // self.world_size
            warnings.warn(
                f"SlipstreamLoader yields no batches: drop_last=True and batch_size="
                f"{self.batch_size} is larger than the {per_rank} samples each of "
                f"{self.world_size} rank(s) gets from {sampler.num_samples}. Use a smaller "
                f"batch_size or drop_last=False", UserWarning, stacklevel=2)
        return _EpochIterator(self, epoch, start)

    # -- decode threads and the epoch boundary ----------------------------------------------
    def _epoch_key(self, epoch: int, start: int) -> tuple[Any, ...]:
        """What decides an epoch's batches and how they are decoded."""
        return (epoch, start, self.seed, self.batch_size, self.shuffle, self.drop_last,
                self.rank, self.world_size, self.on_error)

    def _decode_pool(self) -> DecodePool:
        """The decode threads, started on first use and kept until :meth:`close`."""
        want = max(1, min(self.num_threads, self.batch_size))
        if self._pool is not None and (self._pool.closed or self._pool.num_threads != want):
            self._discard_handover()
            self._pool.close()
            self._pool = None
        if self._pool is None:
            self._pool = DecodePool(want)
        return self._pool

    def _take_handover(self, key: tuple[Any, ...]) -> _Handover | None:
        """The batches the last epoch started for the one with ``key``, if it is that one;
        a handover for another epoch (``set_epoch`` or ``load_state_dict`` chose
        differently) is cancelled."""
        handover, self._handover = self._handover, None
        if handover is not None and handover.key != key:
            handover.cancel(self)
            handover = None
        return handover

    def _discard_handover(self) -> None:
        handover, self._handover = self._handover, None
        if handover is not None:
            handover.cancel(self)

    def close(self) -> None:
        """Stop the decode threads (they otherwise live as long as the loader). Iterating
        again starts new ones."""
        self._discard_handover()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> SlipstreamLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the run stands, as plain JSON-able values.

        ``samples_done`` counts the samples of the epoch's global order that all ranks
        together were served. Restoring it with :meth:`load_state_dict` (in a new process,
        with any ``num_threads``) at the same world size makes the next iteration yield
        exactly the batches an uninterrupted run would have yielded next; at another world
        size, the new ranks share out the rest of the epoch (docs/distributed.md)."""
        if self._active is not None:
            epoch, position = self._active
        else:
            epoch, position = self._epoch, self._start_sample
        state = {"seed": self.seed, "epoch": epoch, "samples_done": position,
                 "batch_size": self.batch_size, "world_size": self.world_size,
                 "num_samples": len(self.cache), "shuffle": self.shuffle,
                 "drop_last": self.drop_last}
        blocks = self._block_shuffle()
        if blocks is not None:  # the order depends on it: a resumed run must use the same
            state["shuffle_window"] = blocks.window
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: same seed, epoch and position.

        The saved run may have had another world size; the batch size, shuffling,
        ``drop_last`` and dataset must match. A state that is not one refuses with
        :class:`~slipstream.errors.InvalidArgumentError` and changes nothing."""
        if not isinstance(state, Mapping):
            raise InvalidArgumentError(f"load_state_dict expects the dict that state_dict() "
                                       f"returned, got {type(state).__name__}")
        for key in ("batch_size", "shuffle", "drop_last", "num_samples"):
            mine = len(self.cache) if key == "num_samples" else getattr(self, key)
            if key in state and state[key] != mine:
                raise InvalidArgumentError(
                    f"load_state_dict: the saved run had {key}={state[key]!r}, this loader has "
                    f"{mine!r}; resuming would not reproduce the run. Create the loader with "
                    f"the same {key}"
                )
        seed, epoch, position = _read_state(state, self.batch_size)
        window = state.get("shuffle_window")
        if window is not None and (not _is_int(window) or window < 1):
            raise InvalidArgumentError(f"load_state_dict: shuffle_window must be a positive "
                                       f"integer, got {window!r:.40}; the state is damaged")
        self._shuffle_window = window
        if "samples_done" in state and position > len(self.cache):
            raise InvalidArgumentError(
                f"load_state_dict: samples_done={position} is past the {len(self.cache)} "
                f"samples of this dataset; the state is from another run or damaged")
        self.seed, self._epoch, self._start_sample = seed, epoch, position
        self._active = None
        if self._sampler().num_batches(position) == 0:  # the saved epoch had finished
            self._epoch, self._start_sample = epoch + 1, 0
        self._resumed_at = (self._epoch, self._start_sample)

    def _progress(self, epoch: int, batches_done: int, total: int) -> None:
        """Called by the iterator after each batch it hands out."""
        position = self._iter_start + batches_done * self.batch_size * self.world_size
        self._active = (epoch, position) if batches_done < total else None

    def __repr__(self) -> str:
        return (f"SlipstreamLoader(batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, num_threads={self.num_threads}, device={self.device})")


def _read_state(state: Mapping[str, Any], batch_size: int) -> tuple[int, int, int]:
    """``(seed, epoch, samples_done)`` from a :meth:`SlipstreamLoader.state_dict`, checked.

    A state saved before positions were global (``batches_done`` per rank) is read too."""
    where = "load_state_dict"
    legacy = "samples_done" not in state and "batches_done" in state
    position_key = "batches_done" if legacy else "samples_done"
    missing = [k for k in ("seed", "epoch", position_key) if k not in state]
    if missing:
        raise InvalidArgumentError(f"{where}: the state lacks {missing}; pass the dict that "
                                   f"state_dict() returned (its keys: {sorted(map(str, state))})")

    def integer(key: str, default: int | None = None, low: int | None = 0) -> int:
        value = state.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or (
                low is not None and value < low):
            raise InvalidArgumentError(f"{where}: {key} must be an integer >= {low}, got "
                                       f"{value!r:.60}; the state is damaged")
        return value

    seed, epoch, position = integer("seed", low=None), integer("epoch"), integer(position_key)
    if legacy:
        position *= batch_size * integer("world_size", 1, low=1)
    elif position % batch_size:
        raise InvalidArgumentError(f"{where}: samples_done={position} is not a whole number "
                                   f"of batches of {batch_size}; the state is damaged")
    return seed, epoch, position


#: Failures that are not about one sample's bytes: skipping would only hide them.
_NOT_SKIPPABLE = (MissingDependencyError, CacheError, MemoryError)


def _slice_runner(pipelines: list[_ImagePipeline], samples: dict[str, BatchSamples],
                  slot: dict[str, Any], plans: dict[str, Any], indices: np.ndarray,
                  cache: Cache, failed: list[tuple[int, SampleError]] | None):
    """The work of one batch, as a function of a slice ``[lo, hi)`` of its samples: one
    :meth:`~slipstream.decoders.ImageDecoder.decode_slice` call per image field (one
    native call with the GIL released, for the crop decoders).

    With ``failed`` given (``on_error="skip"``), a sample that fails is recorded there as
    ``(batch position, error)``; otherwise the slice's first failure ends the batch.
    It holds no reference to the iterator or the loader.
    """

    def run_slice(lo: int, hi: int) -> None:
        for p in pipelines:
            errors = p.decoder.decode_slice(lo, hi, samples[p.field], plans[p.field],
                                            slot[p.field])
            for k, exc in sorted(errors, key=lambda item: item[0]):
                if isinstance(exc, _NOT_SKIPPABLE):
                    raise exc
                error = _sample_error(cache, p.field, int(indices[k]), exc)
                if failed is None:
                    raise error from exc
                error.__cause__ = exc
                failed.append((k, error))  # list.append is atomic under the GIL

    return run_slice


def _sample_error(cache: Cache, field: str, index: int, exc: Exception) -> SampleError:
    path = cache.column("path").value(index) if "path" in cache.field_names else None
    where = f" ({path})" if path else ""
    src = cache.source.get("url") or str(cache.path)
    return SampleError(
        f"sample {index}{where} of {src}: decoding field {field!r} failed: "
        f"{type(exc).__name__}: {exc}",
        index=index, path=path,
    )


def _heap_values(col: HeapColumn, indices: np.ndarray) -> list[Any]:
    """A string or bytes field's values for a batch, read in one native call (the
    per-value Python of ``col.values`` costs the GIL ~1 us a sample); ``col.values``
    itself where it must explain a problem (text that is not UTF-8)."""
    addresses, keepalive = col.heap.locate(indices)
    try:
        return kernel.load().values(addresses, col.sizes[indices].astype(np.uint64),
                                    len(indices), col.kind is FieldKind.STR)
    except UnicodeDecodeError:
        return col.values(indices)
    finally:
        del keepalive


def _keep_samples(value: Any, keep: np.ndarray) -> Any:
    """A decoder's batch value with only the samples where ``keep`` is true."""
    if isinstance(value, torch.Tensor):
        return value[torch.from_numpy(keep)]
    if isinstance(value, dict):
        return {name: _keep_samples(v, keep) for name, v in value.items()}
    if isinstance(value, list):
        return [v for v, k in zip(value, keep) if k]
    if isinstance(value, PackedBytes):
        offsets = value.offsets.numpy()
        pieces = [value.data[offsets[k]:offsets[k + 1]] for k in np.flatnonzero(keep)]
        sizes = np.diff(offsets)[keep]
        new_offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=new_offsets[1:])
        data = torch.cat(pieces) if pieces else value.data[:0]
        return PackedBytes(data, torch.from_numpy(new_offsets))
    raise TypeError(f"on_error='skip' cannot drop samples from a {type(value).__name__}")


#: One batch in flight: its job, plans, context and the failures ``on_error="skip"`` collects.
_InFlight = tuple[BatchJob, dict[str, Any], BatchContext, "list[tuple[int, SampleError]] | None"]


class _Ahead:
    """The next epoch's first batches, submitted while this epoch's last ones are consumed."""

    def __init__(self, key: tuple[Any, ...], batches: list[np.ndarray], epoch: int) -> None:
        self.key = key
        self.batches = batches
        self.epoch = epoch
        self.inflight: dict[int, _InFlight] = {}
        self.submitted = 0


class _Handover:
    """What an exhausted epoch leaves the next one: the batches it started, in their slots."""

    def __init__(self, ahead: _Ahead, slots: list[dict[str, Any]], slot_events: list[Any],
                 base: int, pool: DecodePool, pins: dict[int, BatchPins | None]) -> None:
        self.key = ahead.key
        self.batches = ahead.batches
        self.inflight = ahead.inflight
        self.submitted = ahead.submitted
        self.slots = slots
        self.slot_events = slot_events
        self.base = base
        self.pool = pool
        self.pins = pins  # the chunks its batches read, pinned per slot (streamed caches)

    def cancel(self, loader: SlipstreamLoader) -> None:
        """Cancel its batches; once nothing writes into its slots, they are spare again."""
        if _cancel_and_wait(self.inflight.values(), self.pool):
            loader._spare_slots.extend(zip(self.slots, self.slot_events))
        self.inflight.clear()
        for pins in self.pins.values():
            if pins is not None:
                pins.release()
        self.pins = {}


def _cancel_and_wait(inflight: Any, pool: DecodePool | None) -> bool:
    """Cancel jobs and wait until none runs; False (no wait) when called from a decode
    thread itself (a garbage collection there), where waiting would deadlock."""
    jobs = [entry[0] for entry in inflight]
    for job in jobs:
        job.cancelled = True
    if pool is not None and pool.runs_current_thread():
        return False
    for job in jobs:
        job.wait()
    return True


class _EpochIterator:
    """One epoch: keeps ``prefetch - 1`` batches decoding while one is consumed, and near
    its end, the next epoch's first batches (handed over when it is exhausted)."""

    def __init__(self, loader: SlipstreamLoader, epoch: int, start: int = 0) -> None:
        self.loader = loader
        self.epoch = epoch
        self.start = start
        self.cache = loader.cache
        self.pipelines = loader._resolve_pipelines()
        self.columns: dict[str, ImageColumn] = {
            p.field: self.cache.image_column(p.field, loader.image_format)
            for p in self.pipelines}
        self.views = {name: ImageColumnView(c.heights, c.widths, c.sizes)
                      for name, c in self.columns.items()}
        # every memory-mapped column a batch reads, checked for changes before each batch
        self.heaps: list[HeapColumn] = list(self.columns.values()) + [
            self.cache.column(f.name) for f in self.cache.fields
            if f.kind in (FieldKind.STR, FieldKind.BYTES)]
        #: the fields served as stored (labels, paths): name, column, their stages
        self.plain_fields = [(f.name, self.cache.column(f.name),
                              loader._other_pipelines.get(f.name, ()))
                             for f in self.cache.fields if f.kind is not FieldKind.IMAGE]
        handover = loader._take_handover(loader._epoch_key(epoch, start))
        self.batches: list[np.ndarray] = (handover.batches if handover is not None
                                          else loader._sampler().batches(epoch, offset=start))
        self.pool: DecodePool | None = None
        if self.pipelines and self.batches:
            self.pool = loader._decode_pool()
        self.inflight: dict[int, _InFlight] = {}
        self.submitted = 0
        self.base = 0  # batch b decodes into slot (base + b) % len(slots)
        self.slots: list[dict[str, Any]] = []
        self.slot_events: list[Any] = []
        #: chunks of a streamed cache pinned by the batch decoding in each slot
        self.pins: dict[int, BatchPins | None] = {}
        if handover is not None and handover.pool is self.pool:
            self.slots, self.slot_events = handover.slots, handover.slot_events
            self.pins = handover.pins
            self.inflight, self.submitted = handover.inflight, handover.submitted
            self.base = handover.base
        else:
            if handover is not None:
                handover.cancel(loader)
            self._take_slots(min(loader.prefetch, max(1, len(self.batches))))
        self.ahead: _Ahead | None = None
        self._looked_ahead = False
        self.next_to_yield = 0
        # the cache is in use until the epoch ends: `slipstream rm/prune` leave it alone
        self.in_use = self.cache.mark_in_use() if self.cache.mark_in_use else None
        try:
            # the batches the previous epoch already pinned for this one are not "coming";
            # the next epoch's first ones, which this epoch's tail starts, are
            read_ahead(self.heaps, self.batches[self.submitted:] + self._next_epoch_start())
            self._submit_until(len(self.slots))  # every slot is free: start decoding now
        except BaseException:
            self.close()
            raise

    def _take_slots(self, needed: int) -> None:
        # batch buffers are reused from epoch to epoch (pinning memory is expensive)
        loader = self.loader
        pin = loader.device is not None and loader.device.type == "cuda"
        reused = loader._spare_slots[:needed]
        del loader._spare_slots[:needed]
        self.slots = [slot for slot, _ in reused] + [
            {p.field: p.decoder.allocate(loader.batch_size, self.views[p.field], pin)
             for p in self.pipelines}
            for _ in range(needed - len(reused))
        ]
        self.slot_events = [event for _, event in reused] + [None] * (needed - len(reused))

    # -- scheduling ---------------------------------------------------------------------------
    def _slot_of(self, b: int) -> int:
        return (self.base + b) % len(self.slots)

    def _submit_until(self, stop: int) -> None:
        """Submit batches up to (not including) position ``stop``; positions past this
        epoch's last batch are the next epoch's first ones."""
        n = len(self.batches)
        while self.submitted < min(stop, n):
            self.inflight[self.submitted] = self._submit(self.epoch, self.batches[self.submitted],
                                                         self._slot_of(self.submitted))
            self.submitted += 1
        if stop > n and self.pool is not None:
            ahead = self._ahead()
            while ahead is not None and ahead.submitted < min(stop - n, len(ahead.batches)):
                j = ahead.submitted
                ahead.inflight[j] = self._submit(ahead.epoch, ahead.batches[j],
                                                 self._slot_of(n + j))
                ahead.submitted += 1

    def _next_epoch_start(self) -> list[np.ndarray]:
        """The next epoch's batches that this epoch's tail will start (as things stand
        now), for a streamed cache's read-ahead; none where no column is streamed."""
        if not is_streamed(self.heaps):
            return []
        loader = self.loader
        return list(loader._sampler().batches(loader._epoch, offset=loader._start_sample)
                    [:len(self.slots)])

    def _ahead(self) -> _Ahead | None:
        """The epoch the loader will run next, as it stands now (made once)."""
        if not self._looked_ahead:
            self._looked_ahead = True
            loader = self.loader
            epoch, start = loader._epoch, loader._start_sample
            batches = loader._sampler().batches(epoch, offset=start)
            if batches:
                self.ahead = _Ahead(loader._epoch_key(epoch, start), batches, epoch)
        return self.ahead

    def _slice_size(self, n: int) -> int:
        # One slice per thread: each slice costs a kernel call and a wake-up under the
        # GIL, and the other batches in flight (prefetch) keep every thread busy.
        return max(1, math.ceil(n / self.loader.num_threads))

    def _submit(self, epoch: int, indices: np.ndarray, slot_index: int) -> _InFlight:
        event = self.slot_events[slot_index]
        if event is not None:  # the GPU may still be copying out of this slot
            event.synchronize()
            self.slot_events[slot_index] = None
        slot = self.slots[slot_index]
        self._unpin(slot_index)
        self.pins[slot_index] = pin_batch(self.heaps, indices)
        for col in self.heaps:
            self.cache.check_unchanged(col, indices)
        ctx = BatchContext(self.loader.seed, epoch, indices)
        plans = {p.field: p.decoder.plan(ctx, self.views[p.field]) for p in self.pipelines}
        samples = {p.field: BatchSamples.gather(self.columns[p.field], indices)
                   for p in self.pipelines}
        failed: list[tuple[int, SampleError]] | None = (
            [] if self.loader.on_error == "skip" else None)
        run_slice = _slice_runner(self.pipelines, samples, slot, plans, indices,
                                  self.cache, failed)
        job = BatchJob(run_slice, len(indices), self._slice_size(len(indices)))
        if self.pool is not None:
            self.pool.submit(job)
        else:  # no image field: nothing to decode
            for lo, hi in job.slices:
                job.run(lo, hi)
        return job, plans, ctx, failed

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            b = self.next_to_yield
            if b >= len(self.batches):
                if self.pool is not None and self.loader.skipped:
                    log.warning("epoch %d: on_error='skip' left out %d sample(s); see "
                                "loader.skipped", self.epoch, len(self.loader.skipped))
                self._hand_over()
                raise StopIteration
            try:
                # the consumer is done with batch b - 1: its slot takes batch b - 1 + S
                self._submit_until(b + len(self.slots))
            except BaseException:  # a cache file changed under us
                self.close()
                raise
            job, plans, ctx, failed = self.inflight.pop(b)
            job.wait()
            if job.error is not None:
                self.close()
                raise job.error
            self.next_to_yield = b + 1
            keep = self._record_skipped(failed, len(ctx.indices)) if failed else None
            done = self.start + b + 1
            if keep is not None and not keep.any():  # every sample failed: nothing to yield
                self._unpin(self._slot_of(b))
                self.loader._progress(self.epoch, done, self.start + len(self.batches))
                continue
            try:
                out = self._assemble(b, plans, ctx, keep)
            except BaseException:
                self.close()  # a failing transform must not leave threads decoding
                raise
            self._unpin(self._slot_of(b))
            self.loader._progress(self.epoch, done, self.start + len(self.batches))
            return out

    def _unpin(self, slot_index: int) -> None:
        pins = self.pins.pop(slot_index, None)
        if pins is not None:
            pins.release()

    def _record_skipped(self, failed: list[tuple[int, SampleError]], n: int) -> np.ndarray:
        """Log and count the samples ``on_error="skip"`` leaves out; the keep mask."""
        keep = np.ones(n, bool)
        for k, error in sorted(failed, key=lambda item: item[0]):
            if keep[k]:  # a sample fails once even when several fields fail
                keep[k] = False
                self.loader.skipped.append(error)
                self.loader.skipped_total += 1
                log.warning("skipping (on_error='skip'): %s", error)
        return keep

    def _assemble(self, b: int, plans: dict[str, Any], ctx: BatchContext,
                  keep: np.ndarray | None = None) -> dict[str, Any]:
        """The batch dict; ``keep`` (``on_error="skip"``) masks out the failed samples."""
        indices = self.batches[b]
        n = len(indices)
        if keep is not None:
            indices = indices[keep]
            ctx = BatchContext(ctx.seed, ctx.epoch, indices, ctx.view)
        slot_index = self._slot_of(b)
        slot = self.slots[slot_index]
        out: dict[str, Any] = {}
        device = self.loader.device
        on_cuda = False
        for p in self.pipelines:
            value = p.decoder.finish(slot[p.field], plans[p.field], n)
            if keep is not None:
                value = _keep_samples(value, keep)
            for t in p.transforms:
                value = t(value, ctx)
            if isinstance(value, dict):
                out.update(value)
            else:
                out[p.field] = value
            # only a device or a transform puts a slot's pixels on the GPU (asked only then:
            # every torch call costs the GIL tens of microseconds on a cold cache)
            if device is not None or p.transforms:
                values = value.values() if isinstance(value, dict) else (value,)
                on_cuda |= any(isinstance(v, torch.Tensor) and v.is_cuda for v in values)
            params = crop_params(p.decoder, p.transforms, plans[p.field], n, ctx, keep)
            if params is not None:
                out[f"{p.field}_params"] = params
        for name, col, stages in self.plain_fields:
            if isinstance(col, HeapColumn):
                out[name] = _heap_values(col, indices)
            else:
                t = torch.from_numpy(col[indices])
                if device is not None and device.type != "cpu":
                    t = t.to(device, non_blocking=True)
                for stage in stages:
                    t = stage(t, ctx)
                out[name] = t
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
            self.slot_events[slot_index] = event
        return out

    def __len__(self) -> int:
        return len(self.batches) - self.next_to_yield

    def _hand_over(self) -> None:
        """The epoch is exhausted: leave the next epoch's batches in flight to the loader."""
        ahead = self.ahead
        if ahead is None or not ahead.submitted or self.pool is None:
            self.close()
            return
        self.loader._handover = _Handover(ahead, self.slots, self.slot_events,
                                          self._slot_of(len(self.batches)), self.pool,
                                          self.pins)
        self.ahead = None
        self.slots, self.slot_events, self.pins = [], [], {}
        self.close()

    def close(self) -> None:
        """Stop this epoch's decoding (idempotent; also run when the iterator dies): its
        batches in flight are cancelled and waited for, so nothing writes into its slots
        any more. The decode threads are the loader's and stay."""
        inflight = list(self.inflight.values())
        if self.ahead is not None:
            inflight += self.ahead.inflight.values()
            self.ahead = None
        self.inflight.clear()
        self.next_to_yield = len(self.batches)  # a later next() raises StopIteration
        if _cancel_and_wait(inflight, self.pool) and self.slots:
            self.loader._spare_slots.extend(zip(self.slots, self.slot_events))
        self.slots, self.slot_events = [], []
        self.pool = None
        stop_read_ahead(self.heaps)
        for slot_index in list(self.pins):  # nothing decodes any more: no batch reads a chunk
            self._unpin(slot_index)
        if self.in_use is not None:
            self.in_use.release()
            self.in_use = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
