"""Where caches live: local and shared directories (remote stores arrive as plugins)."""

from .base import CacheStore
from .local import LocalStore, default_cache_dir

__all__ = ["CacheStore", "LocalStore", "default_cache_dir"]
