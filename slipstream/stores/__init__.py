"""Where caches live and how they travel: local and shared directories, remote stores
(S3 and S3-compatible, registered as a plugin), and pull / push / sync between them."""

from ._retry import RetryPolicy
from ._transfer import SyncReport
from .base import CacheStore
from .local import LocalStore, default_cache_dir
from .pull import pull_cache
from .push import push_cache
from .remote import RemoteStore, RemoteStoreError
from .s3 import S3Store
from .sync import ensure_cache, open_remote_store, sync_remote_cache

__all__ = [
    "CacheStore",
    "LocalStore",
    "RemoteStore",
    "RemoteStoreError",
    "RetryPolicy",
    "S3Store",
    "SyncReport",
    "default_cache_dir",
    "ensure_cache",
    "open_remote_store",
    "pull_cache",
    "push_cache",
    "sync_remote_cache",
]
