"""Which store holds a gallery: Redis when one is configured, else the local SQLite file."""

from __future__ import annotations

import re

from redis import Redis, RedisError

from shared import keys
from shared.config import Settings
from shared.errors import GalleryError, StorageUnavailableError
from shared.gallery.cipher import cipher_for
from shared.gallery.file_store import FileGalleryStore
from shared.gallery.redis_store import RedisGalleryStore
from shared.gallery.store import GALLERY_NAME_PATTERN, GalleryStore


def open_store(gallery: str, settings: Settings, client: Redis | None = None) -> GalleryStore:
    """The store ``KYC_GALLERY_STORE`` selects: Redis when a URL is configured (``auto``), else a file.

    Raises:
        GalleryError: ``KYC_GALLERY_STORE=redis`` without a Redis URL.
    """
    log_max = settings.gallery_log_max_len
    if client is not None:
        return RedisGalleryStore(client, gallery, log_max, cipher_for(gallery))
    url = settings.resolved_redis_url()
    if settings.gallery_store == "redis" or (settings.gallery_store == "auto" and url):
        if not url:
            raise GalleryError("KYC_GALLERY_STORE=redis needs KYC_REDIS_URL (or KYC_BROKER_URL)")
        from shared.storage.redis_client import redis_client

        return RedisGalleryStore(redis_client(url), gallery, log_max, cipher_for(gallery))
    return FileGalleryStore(settings.gallery_file_dir, gallery, log_max)


_SHARD_SUFFIX = re.compile(r"~\d+of\d+$")


def gallery_names(settings: Settings, prefix: str = "", client: Redis | None = None) -> list[str]:
    """The galleries the configured store holds under ``prefix`` (a tenant's ``tenant/``, or ""
    for the default tenant), named without it, shards counted once, sorted: what a tenant-wide
    erasure walks. Redis: the galleries' meta keys; file store: the gallery files."""
    url = settings.resolved_redis_url()
    found: set[str] = set()
    if client is not None or settings.gallery_store == "redis" or (settings.gallery_store == "auto" and url):
        own = client is None
        if client is None:
            from shared.storage.redis_client import redis_client

            client = redis_client(str(url))
        head, suffix = keys.gallery_meta_key("\0").split("\0")
        try:
            for key in client.scan_iter(match=keys.gallery_meta_key(prefix + "*"), count=1000):
                text = key.decode() if isinstance(key, bytes) else str(key)
                found.add(text[len(head) + len(prefix) : -len(suffix)])
        except RedisError as exc:
            raise StorageUnavailableError(f"gallery store unavailable ({type(exc).__name__})") from None
        finally:
            if own:
                client.close()
    elif (settings.gallery_file_dir / prefix).is_dir():
        found = {path.stem for path in (settings.gallery_file_dir / prefix).glob("*.sqlite3")}
    names = {_SHARD_SUFFIX.sub("", name) for name in found}
    # Another tenant's "tenant/name" never matches: "/" is not in a gallery name.
    return sorted(name for name in names if GALLERY_NAME_PATTERN.match(name))
