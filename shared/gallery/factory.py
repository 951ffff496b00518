"""Which store holds a gallery: Redis when one is configured, else the local SQLite file."""

from __future__ import annotations

import re

from redis import Redis, RedisError

from shared import keys
from shared.config import Settings
from shared.errors import GalleryError, StorageUnavailableError
from shared.gallery.cipher import cipher_for
from shared.gallery.file_store import FileGalleryStore
from shared.gallery.redis_store import RedisGalleryStore, unavailable
from shared.gallery.shards import shard_names
from shared.gallery.store import GALLERY_NAME_PATTERN, GalleryStore


def uses_redis(settings: Settings) -> bool:
    """Whether ``KYC_GALLERY_STORE`` selects Redis (``auto``: when a Redis URL is configured).

    Raises:
        GalleryError: ``KYC_GALLERY_STORE=redis`` without a Redis URL.
    """
    url = settings.resolved_redis_url()
    if settings.gallery_store == "redis" and not url:
        raise GalleryError("KYC_GALLERY_STORE=redis needs KYC_REDIS_URL (or KYC_BROKER_URL)")
    return settings.gallery_store == "redis" or (settings.gallery_store == "auto" and bool(url))


def open_store(gallery: str, settings: Settings, client: Redis | None = None) -> GalleryStore:
    """The store ``KYC_GALLERY_STORE`` selects: Redis when a URL is configured (``auto``), else a file.

    Args:
        gallery: the store's name (a gallery, or one shard of it).
        settings: which store, and where.
        client: a Redis client to share (the process's pool); the store then never closes it.

    Raises:
        GalleryError: ``KYC_GALLERY_STORE=redis`` without a Redis URL.
    """
    log_max = settings.gallery_log_max_len
    if client is not None:
        return RedisGalleryStore(client, gallery, log_max, cipher_for(gallery), owns_client=False)
    if uses_redis(settings):
        from shared.storage.redis_client import redis_client

        return RedisGalleryStore(
            redis_client(str(settings.resolved_redis_url()), settings), gallery, log_max, cipher_for(gallery)
        )
    return FileGalleryStore(settings.gallery_file_dir, gallery, log_max)


def gallery_exists(gallery: str, settings: Settings, client: Redis | None = None) -> bool:
    """Whether anything was ever enrolled in ``gallery`` (and it was not dropped since), asked
    without opening it, so that naming an unknown gallery creates no key, file or connection.

    Args:
        gallery: a checked gallery name.
        settings: which store, and where.
        client: the Redis client to ask (default: one made and closed here).

    Raises:
        StorageUnavailableError: Redis did not answer.
    """
    names = shard_names(gallery, settings.gallery_shards)
    if not uses_redis(settings):
        return any(FileGalleryStore.path_for(settings.gallery_file_dir, name).exists() for name in names)
    from shared.storage.redis_client import redis_client

    asked = client if client is not None else redis_client(str(settings.resolved_redis_url()), settings)
    try:
        with unavailable():
            # The meta hash holds the model binding from the first enrolment until a drop.
            return bool(asked.exists(*(keys.gallery_meta_key(name) for name in names)))
    finally:
        if client is None:
            asked.close()


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

            client = redis_client(str(url), settings)
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
    return sorted(name for name in names if GALLERY_NAME_PATTERN.fullmatch(name))
