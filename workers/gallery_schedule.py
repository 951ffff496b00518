"""The gallery's celery beat entries, from the settings: one per rescreen pair and dedupe gallery.

No Celery import here, so ``workers.app`` can merge these into its ``beat_schedule``.
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import GalleryError
from shared.gallery.store import check_gallery_name

SCREEN_TASK = "kyc.gallery.screen"


def beat_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """``{name: entry}`` for ``KYC_GALLERY_RESCREEN`` ("gallery:against") and ``KYC_GALLERY_DEDUPE``.

    Raises:
        GalleryError: a malformed pair or gallery name (a worker or beat refuses to start).
    """
    every = settings.gallery_screen_interval_s
    # A run left unstarted past the next one is stale: drop it rather than run two back to back.
    options = {"expires": every}
    entries: dict[str, dict[str, Any]] = {}
    for pair in settings.gallery_rescreen:
        gallery, sep, against = pair.partition(":")
        if not sep:
            raise GalleryError(f"KYC_GALLERY_RESCREEN entry {pair!r} must be 'gallery:against'")
        args = ("rescreen", check_gallery_name(gallery), check_gallery_name(against))
        entries[f"gallery-rescreen-{gallery}-{against}"] = {
            "task": SCREEN_TASK, "schedule": every, "args": args, "options": options,
        }  # fmt: skip
    for gallery in settings.gallery_dedupe:
        args = ("dedupe", check_gallery_name(gallery), gallery)
        entries[f"gallery-dedupe-{gallery}"] = {
            "task": SCREEN_TASK,
            "schedule": every,
            "args": args,
            "options": options,
        }
    return entries
