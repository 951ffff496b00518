"""Settings: unknown KYC_ variables are refused with the closest real name; image sizes settable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import Settings
from shared.errors import SettingsError


def test_a_misspelt_variable_is_refused_naming_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_BROKR_URL", "redis://localhost:6379/0")
    with pytest.raises(SettingsError, match="KYC_BROKR_URL; did you mean KYC_BROKER_URL"):
        Settings()


def test_an_unknown_variable_without_a_close_name_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_ZZZ", "1")
    with pytest.raises(SettingsError, match=r"unknown setting KYC_ZZZ$"):
        Settings()


def test_unknown_keyword_arguments_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(brokr_url="redis://localhost")  # type: ignore[call-arg]


def test_image_sizes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_MAX_IMAGE_SIZE_PX", "[640, 480]")
    monkeypatch.setenv("KYC_MIN_IMAGE_SIZE_PX", "[64, 64]")
    settings = Settings()
    assert settings.max_image_size_px == (640, 480) and settings.min_image_size_px == (64, 64)
