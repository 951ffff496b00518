"""S3 backend on boto3 (AWS, MinIO, moto): bucket allow-list, size cap before download, and
errors sorted into permanent and transient ones."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.config import Settings
from shared.errors import (
    ObjectNotFoundError,
    ObjectSupersededError,
    ObjectTooLargeError,
    ReferenceRejectedError,
    StorageError,
    StorageUnavailableError,
)
from shared.storage.refs import Ref, parse_ref

log = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled"}
# PreconditionFailed: a conditional request lost a race with another writer; a retry re-checks it.
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ConditionalRequestConflict",
    "PreconditionFailed",
}

# botocore's DEBUG records carry what must never reach a log: the signed request with its
# `Authorization` header ("Sending http request"), the canonical request, string to sign and
# signature (botocore.auth), and request bodies ("Making request ... with params"), which are
# images and result documents with templates. No redaction of those reprs is reliable, so the
# SDK's loggers never emit below INFO, whatever level the process logs at.
_SDK_LOGGERS = ("botocore", "boto3", "s3transfer")


class _NoSdkDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_NO_SDK_DEBUG = _NoSdkDebug()


def quiet_sdk_loggers() -> None:
    """Keep boto3's and botocore's DEBUG records out of every handler.

    The parents are raised to INFO so a DEBUG root (``--loglevel DEBUG``, ``basicConfig``) does not
    reach them, and each existing child logger gets a filter, which holds even where a level was
    set on that child explicitly (``boto3.set_stream_logger``). A filter on a logger applies to
    the records created there, hence one per logger; the modules that create them are all
    imported once a client exists.
    """
    for name in _SDK_LOGGERS:
        parent = logging.getLogger(name)
        if parent.level < logging.INFO:
            parent.setLevel(logging.INFO)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in _SDK_LOGGERS:
            logger.addFilter(_NO_SDK_DEBUG)  # a no-op when it is there already


_clients_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}


def s3_client(settings: Settings) -> Any:
    """The process's boto3 client for these settings, created on first use.

    Clients are thread-safe but not fork-safe, so the pid is part of the cache key: a Celery
    child process builds its own instead of reusing its parent's connection pool.
    """
    key = (
        os.getpid(),
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_connect_timeout_s,
        settings.s3_read_timeout_s,
        settings.s3_max_attempts,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            config = Config(
                connect_timeout=settings.s3_connect_timeout_s,
                read_timeout=settings.s3_read_timeout_s,
                retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
            )
            quiet_sdk_loggers()
            # Credentials come from boto3's usual chain (env, profile, instance role).
            client = boto3.session.Session().client(
                "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config
            )
            quiet_sdk_loggers()  # again: building the client imported more of botocore
            _clients[key] = client
        return client


def translate_error(exc: Exception, ref: Ref) -> StorageError:
    """Map a boto3/botocore exception to the project's storage error for ``ref``."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND or status == 404:
            return ObjectNotFoundError(f"{ref}: no such object")
        if code in _DENIED or status == 403:
            return StorageError(f"{ref}: access denied")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return StorageUnavailableError(f"{ref}: S3 unavailable ({code or status})")
        return StorageError(f"{ref}: S3 error {code or status}")
    if isinstance(exc, (BotoConnectionError, BotoCoreError)):
        # Connection refused, DNS, timeouts, truncated reads: the store did not answer.
        return StorageUnavailableError(f"{ref}: S3 unreachable ({type(exc).__name__})")
    return StorageError(f"{ref}: S3 error ({type(exc).__name__})")


class S3Store:
    """Objects in S3 buckets from an allow-list.

    Args:
        settings: endpoint, region, timeouts, retries and ``max_image_bytes``.
        buckets: buckets this store may touch (default: ``settings.allowed_buckets()``).
    """

    def __init__(self, settings: Settings, buckets: set[str] | None = None) -> None:
        self.settings = settings
        self.buckets = set(buckets) if buckets is not None else settings.allowed_buckets()
        self.max_bytes = settings.max_image_bytes

    def check(self, ref: str | Ref) -> Ref:
        """Parse ``ref`` and make sure it is an S3 reference to an allowed bucket."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.scheme != "s3" or parsed.bucket is None:
            raise ReferenceRejectedError(f"{parsed} is not an s3:// reference")
        if parsed.bucket not in self.buckets:
            raise ReferenceRejectedError("reference names a bucket that is not allowed")
        return parsed

    def get(self, ref: str | Ref) -> bytes:
        """Download an object; its size is checked from the GET response's headers before any
        byte of the body is read.

        One request, not HEAD then GET: the headers describe the very object whose body follows
        (no later upload can slip in between), and an oversized body is never read, its
        connection is closed instead.

        A pinned reference reads exactly its version (``VersionId``) or, pinned by ETag, the
        object only while it is unchanged (``If-Match``).

        Raises:
            ObjectSupersededError: pinned by ETag, and overwritten since.
        """
        parsed = self.check(ref)
        client = s3_client(self.settings)
        pin: dict[str, str] = {}
        if parsed.version_id:
            pin["VersionId"] = parsed.version_id
        elif parsed.etag:
            pin["IfMatch"] = f'"{parsed.etag}"'
        try:
            response = client.get_object(Bucket=parsed.bucket, Key=parsed.key, **pin)
            body = response["Body"]
            try:
                size = int(response.get("ContentLength", 0))
                if size > self.max_bytes:
                    raise ObjectTooLargeError(f"{parsed}: {size} bytes exceeds the {self.max_bytes}-byte limit")
                data: bytes = body.read(self.max_bytes + 1)
            finally:
                body.close()
        except StorageError:
            raise
        except ClientError as exc:
            # A conditional read that lost to a newer upload: final, unlike a racing write's 412.
            if "IfMatch" in pin and exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise ObjectSupersededError(f"{parsed}: overwritten since the reference was made") from None
            raise translate_error(exc, parsed) from None
        except Exception as exc:
            raise translate_error(exc, parsed) from None
        if len(data) > self.max_bytes:
            raise ObjectTooLargeError(f"{parsed}: exceeds the {self.max_bytes}-byte limit")
        return data

    def put(self, ref: str, data: bytes, tags: dict[str, str] | None = None) -> None:
        """Upload (or overwrite) an object, with object ``tags`` (a lifecycle rule's filter)."""
        parsed = self.check(ref)
        extra = {"Tagging": urlencode(tags)} if tags else {}
        try:
            s3_client(self.settings).put_object(Bucket=parsed.bucket, Key=parsed.key, Body=data, **extra)
        except Exception as exc:
            raise translate_error(exc, parsed) from None

    def drop_older_versions(self, ref: str) -> int:
        """Delete every version of the object but the current one (and old delete markers): in
        a versioned bucket an overwrite keeps what it replaced. Needs ``s3:ListBucketVersions``
        and ``s3:DeleteObjectVersion``; a bucket without versioning has none to delete.

        Returns:
            How many versions were deleted.
        """
        parsed = self.check(ref)
        client = s3_client(self.settings)
        dropped = 0
        try:
            for page in client.get_paginator("list_object_versions").paginate(Bucket=parsed.bucket, Prefix=parsed.key):
                for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if version["Key"] == parsed.key and not version.get("IsLatest"):
                        client.delete_object(Bucket=parsed.bucket, Key=parsed.key, VersionId=version["VersionId"])
                        dropped += 1
        except Exception as exc:
            raise translate_error(exc, parsed) from None
        return dropped

    def put_new(self, ref: str, data: bytes, tags: dict[str, str] | None = None) -> bool:
        """Upload only if no object exists under ``ref`` (``If-None-Match: *``).

        Returns:
            True if written, False if an object was already there (it is left untouched).
        """
        parsed = self.check(ref)
        extra = {"Tagging": urlencode(tags)} if tags else {}
        try:
            s3_client(self.settings).put_object(
                Bucket=parsed.bucket, Key=parsed.key, Body=data, IfNoneMatch="*", **extra
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise translate_error(exc, parsed) from None
        except Exception as exc:
            raise translate_error(exc, parsed) from None
        return True
