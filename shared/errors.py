"""One error tree. Each leaf maps to one result code, so a caller never sees a bare exception.

``code`` is what lands in a result document; ``transient`` tells the worker whether retrying the
same input can help (storage and broker hiccups) or never will (a bad image stays bad).
"""

from __future__ import annotations

from enum import Enum


class ResultCode(str, Enum):
    SUCCESS = "SUCCESS"
    INVALID_IMAGE = "INVALID_IMAGE"
    ERROR = "ERROR"
    SPOOF_SUSPECTED = "SPOOF_SUSPECTED"
    SUPERSEDED = "SUPERSEDED"


class ImageReason(str, Enum):
    TOO_SMALL = "TOO_SMALL"
    TOO_LARGE = "TOO_LARGE"
    INVALID_FORMAT = "INVALID_FORMAT"
    READ_ERROR = "READ_ERROR"
    TOO_DARK = "TOO_DARK"


class KYCFaceError(Exception):
    """Root of every error the project raises on purpose."""

    code: ResultCode = ResultCode.ERROR
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImageError(KYCFaceError):
    """The input is not an image we can use. An answer, not a failure: jobs end ``succeeded``."""

    code = ResultCode.INVALID_IMAGE

    def __init__(self, reason: ImageReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpoofSuspectedError(KYCFaceError):
    """Under ``KYC_LIVENESS=enforce``, the selfie's face scored under the liveness threshold.

    An answer about the selfie (a ``verify`` result with code SPOOF_SUSPECTED), not a failure.
    """

    code = ResultCode.SPOOF_SUSPECTED

    def __init__(self, score: float, threshold: float) -> None:
        super().__init__(f"the selfie looks like a presentation attack: liveness {score:.3f} < {threshold:g}")
        self.score = score
        self.threshold = threshold


class ModelError(KYCFaceError):
    """A model file is missing, has the wrong checksum, or is of a kind we cannot drive."""


class ProviderUnavailableError(ModelError):
    """``KYC_ORT_PROVIDERS`` names an onnxruntime execution provider this install lacks."""


class FeaturesError(KYCFaceError):
    """A features string is malformed, or two features come from different models."""


class ForeignFeaturesError(FeaturesError):
    """A features string sealed for another tenant (or, for a tenant, one sealed before features
    were bound to tenants): refused as not sealed for this one."""


class CalibrationError(KYCFaceError):
    """No confidence map is available for the embedding model in use."""


class StorageError(KYCFaceError):
    """Reading or writing an object failed."""


class ObjectNotFoundError(StorageError):
    """The referenced object does not exist. Retrying will not make it appear."""


class ObjectSupersededError(StorageError):
    """A reference pinned by ETag (``?etag=``) names an object that has been overwritten since:
    the job is refused rather than answered on other bytes (its failure code ``SUPERSEDED``).
    The new version's own event makes its own job."""

    code = ResultCode.SUPERSEDED


class ReferenceRejectedError(StorageError):
    """The reference names a bucket we may not read, or a key that is empty or unsafe."""


class ObjectTooLargeError(StorageError):
    """The object is larger than ``KYC_MAX_IMAGE_BYTES``; refused before download."""


class StorageUnavailableError(StorageError):
    """The store did not answer (timeout, connection refused, 5xx). Worth retrying."""

    transient = True


class FaceCountError(KYCFaceError):
    """An image that must show one person (a gallery probe, a CLI argument) shows no usable face,
    or several: never guess which one was meant."""


class GalleryError(KYCFaceError):
    """A gallery operation was refused (unknown gallery, mixed models, bad face id)."""


class GalleryNotFoundError(GalleryError):
    """A search or delete named a gallery nothing was ever enrolled in (or one since dropped).

    Refused rather than answered "no match": a misspelt watchlist would otherwise clear everyone.
    """


class JobError(KYCFaceError):
    """A job request is malformed, or a job id is reused for different work."""


class UnreadableJobError(KYCFaceError):
    """A stored job document no longer parses (written by another schema, or altered in Redis).

    The job cannot be answered or run; callers get this instead of a parser's exception.
    """


class TimeLimitExceeded(KYCFaceError):
    """The job ran past ``KYC_TASK_SOFT_TIME_LIMIT_S`` and was stopped, or past
    ``KYC_TASK_TIME_LIMIT_S`` and its process was killed; final either way, since the same input
    would hit the same wall again. The document's message says which limit."""


class WorkerLost(KYCFaceError):
    """The process running the job was lost mid-run (SIGKILL, the OOM killer, a crash in native
    code): recorded on the job, which runs again, and quoted by its dead letter. The message
    names the image references the job was reading, never the images."""


class MaxAttemptsExceeded(KYCFaceError):
    """The job was started ``KYC_MAX_ATTEMPTS`` times without finishing (worker lost, time limit,
    storage down): the dead letter, so a job that kills its worker cannot loop forever."""


class SettingsError(KYCFaceError):
    """A ``KYC_`` environment variable that no setting reads (a typo would otherwise be ignored)."""
