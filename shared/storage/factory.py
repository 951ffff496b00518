"""Pick the backend from the reference: ``s3://`` goes to S3, anything else to local files."""

from __future__ import annotations

from shared.config import Settings
from shared.errors import ReferenceRejectedError
from shared.storage.local import LocalStore
from shared.storage.refs import Ref, parse_ref
from shared.storage.s3 import S3Store


class RoutingStore:
    """An :class:`~shared.storage.base.ImageStore` that dispatches each reference by its scheme.

    A job document names the files a worker reads, so local references are read only under
    ``KYC_LOCAL_STORAGE_ROOT``: without one, a worker refuses every local path rather than read
    whatever the document names (``/etc/shadow``, another tenant's uploads, a mounted secret).

    Args:
        settings: S3 and local storage settings.
        any_local_path: read local paths anywhere when no root is set: for the embedded mode,
            where the caller names its own files and no job document crosses a queue.
    """

    def __init__(self, settings: Settings, any_local_path: bool = False) -> None:
        self.s3 = S3Store(settings)
        self.local = LocalStore(settings.max_image_bytes, settings.local_storage_root)
        self._reads_local = settings.local_storage_root is not None or any_local_path

    def validate(self, ref: str) -> Ref:
        """Parse ``ref`` and apply the backend's rules (bucket allow-list, local root) without I/O."""
        parsed = parse_ref(ref)
        if parsed.scheme == "s3":
            return self.s3.check(parsed)
        self._check_local()
        self.local.path_of(parsed)
        return parsed

    def get(self, ref: str | Ref) -> bytes:
        """Read the referenced object (see :class:`~shared.storage.base.ImageStore`).

        Raises:
            ReferenceRejectedError: a local path while no local root is configured (see above).
        """
        parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
        if parsed.scheme == "s3":
            return self.s3.get(parsed)
        self._check_local()
        return self.local.get(parsed)

    def put(self, ref: str, data: bytes) -> None:
        """Write the referenced object (reports, at references built from the settings)."""
        (self.s3 if parse_ref(ref).scheme == "s3" else self.local).put(ref, data)

    def _check_local(self) -> None:
        if not self._reads_local:
            raise ReferenceRejectedError("local file references are refused: no KYC_LOCAL_STORAGE_ROOT is configured")


def store_for(settings: Settings, any_local_path: bool = False) -> RoutingStore:
    """The image store for these settings: S3 and local files, chosen per reference."""
    return RoutingStore(settings, any_local_path)
