"""Names that land in Redis keys and file names match their pattern whole: ``$`` in a Python
pattern also matches before a trailing newline, so every check uses ``fullmatch``."""

from __future__ import annotations

import pytest

from shared.config import Settings
from shared.errors import GalleryError, JobError, SettingsError
from shared.gallery.store import check_gallery_name, check_stored_gallery_name
from shared.jobs import JobDocument
from shared.tenants import Tenant


def test_a_gallery_name_with_a_newline_is_refused() -> None:
    assert check_gallery_name("customers") == "customers"
    for name in ("customers\n", "customers\nx", "\ncustomers"):
        with pytest.raises(GalleryError, match="gallery name"):
            check_gallery_name(name)
    with pytest.raises(GalleryError, match="gallery tenant"):
        check_stored_gallery_name("acme\n/customers")


def test_a_tenant_with_a_newline_is_refused() -> None:
    assert Tenant("acme") == "acme"
    with pytest.raises(ValueError, match="tenant"):
        Tenant("acme\n")


def test_a_job_id_with_a_newline_is_refused() -> None:
    with pytest.raises(JobError, match="job id"):
        JobDocument.new("verify", {"selfie": "s3://kyc-images/s.jpg", "document": "s3://kyc-images/d.jpg"}, "case-1\n")


def test_an_api_key_id_with_a_newline_is_refused() -> None:
    with pytest.raises((SettingsError, ValueError), match="key ids"):
        Settings(api_keys={"key-1\n": {"hash": "x", "scopes": ["jobs:read"]}})
