"""Pick the backend from the reference: ``s3://`` goes to S3, anything else to local files."""

from __future__ import annotations

from shared.config import Settings
from shared.storage.local import LocalStore
from shared.storage.refs import Ref, parse_ref
from shared.storage.s3 import S3Store


class RoutingStore:
    """An :class:`~shared.storage.base.ImageStore` that dispatches each reference by its scheme."""

    def __init__(self, settings: Settings) -> None:
        self.s3 = S3Store(settings)
        self.local = LocalStore(settings.max_image_bytes, settings.local_storage_root)

    def validate(self, ref: str) -> Ref:
        """Parse ``ref`` and apply the backend's rules (bucket allow-list, local root) without I/O."""
        parsed = parse_ref(ref)
        if parsed.scheme == "s3":
            return self.s3.check(parsed)
        self.local.path_of(parsed)
        return parsed

    def get(self, ref: str | Ref) -> bytes:
        """Read the referenced object (see :class:`~shared.storage.base.ImageStore`)."""
        parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
        return (self.s3 if parsed.scheme == "s3" else self.local).get(parsed)

    def put(self, ref: str, data: bytes) -> None:
        """Write the referenced object."""
        (self.s3 if parse_ref(ref).scheme == "s3" else self.local).put(ref, data)


def store_for(settings: Settings) -> RoutingStore:
    """The image store for these settings: S3 and local files, chosen per reference."""
    return RoutingStore(settings)
