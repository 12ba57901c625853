"""Where caches live and how they travel: the store contract (:class:`CacheStore`), the
local directory store, stores over any fsspec filesystem (S3 among them, registered as a
plugin), and pull / push / sync between them."""

from ..errors import RemoteStoreError
from ._retry import RetryPolicy
from ._transfer import SyncReport
from .base import CacheStore, ObjectInfo
from .local import LocalStore, default_cache_dir
from .pull import pull_cache
from .push import push_cache
from .remote import RemoteStore
from .s3 import S3Store
from .sync import open_remote_store, sync_remote_cache

__all__ = [
    "CacheStore",
    "LocalStore",
    "ObjectInfo",
    "RemoteStore",
    "RemoteStoreError",
    "RetryPolicy",
    "S3Store",
    "SyncReport",
    "default_cache_dir",
    "open_remote_store",
    "pull_cache",
    "push_cache",
    "sync_remote_cache",
]
