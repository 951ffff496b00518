"""Which store holds a gallery: Redis when one is configured, else the local SQLite file."""

from __future__ import annotations

from redis import Redis

from shared.config import Settings
from shared.errors import GalleryError
from shared.gallery.file_store import FileGalleryStore
from shared.gallery.redis_store import RedisGalleryStore
from shared.gallery.store import GalleryStore


def open_store(gallery: str, settings: Settings, client: Redis | None = None) -> GalleryStore:
    """The store ``KYC_GALLERY_STORE`` selects: Redis when a URL is configured (``auto``), else a file.

    Raises:
        GalleryError: ``KYC_GALLERY_STORE=redis`` without a Redis URL.
    """
    log_max = settings.gallery_log_max_len
    if client is not None:
        return RedisGalleryStore(client, gallery, log_max)
    url = settings.resolved_redis_url()
    if settings.gallery_store == "redis" or (settings.gallery_store == "auto" and url):
        if not url:
            raise GalleryError("KYC_GALLERY_STORE=redis needs KYC_REDIS_URL (or KYC_BROKER_URL)")
        from shared.storage.redis_client import redis_client

        return RedisGalleryStore(redis_client(url), gallery, log_max)
    return FileGalleryStore(settings.gallery_file_dir, gallery, log_max)
