"""Pointing every Redis client at a Sentinel-managed primary, and submits that wait for a replica
(the failover itself is tests/reliability/test_sentinel_failover.py)."""

from __future__ import annotations

import pytest
import redis

from shared.config import Settings, redact_url
from shared.errors import SettingsError, StorageUnavailableError
from shared.jobs import JobDocument, JobStore
from shared.storage.redis_client import broker_transport_options, redis_client
from workers.broker import transport_for


def test_sentinels_need_a_master_name() -> None:
    with pytest.raises(SettingsError, match="KYC_REDIS_MASTER_NAME"):
        Settings(redis_sentinels=["127.0.0.1:26379"])
    with pytest.raises(SettingsError, match="KYC_REDIS_MASTER_NAME"):
        Settings(broker_url="sentinel://127.0.0.1:26379")
    with pytest.raises(SettingsError, match="host:port"):
        Settings(redis_sentinels=["127.0.0.1"], redis_master_name="kyc")


def test_sentinels_from_the_environment_become_kombus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26379")
    monkeypatch.setenv("KYC_REDIS_MASTER_NAME", "kyc")
    monkeypatch.setenv("KYC_BROKER_URL", "redis://:s3cret@ignored:6379/2")
    settings = Settings()
    assert settings.redis_sentinels == ["10.0.0.1:26379", "10.0.0.2:26379"]
    url = settings.resolved_broker_url()
    assert url == "sentinel://:s3cret@10.0.0.1:26379;sentinel://:s3cret@10.0.0.2:26379/2"
    assert settings.resolved_redis_url() == url
    assert redact_url(str(url)) == "sentinel://:***@10.0.0.1:26379;sentinel://:***@10.0.0.2:26379/2"
    assert "s3cret" not in repr(settings)
    assert transport_for(url) == "workers.broker:SentinelTransport"
    assert broker_transport_options(settings)["master_name"] == "kyc"
    client = redis_client(str(url), settings)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (2, "s3cret")
    assert client.connection_pool.service_name == "kyc"  # type: ignore[attr-defined]


def test_sentinels_alone_name_the_broker() -> None:
    settings = Settings(redis_sentinels=["10.0.0.1:26379", "10.0.0.2:26379"], redis_master_name="kyc")
    assert settings.broker_url == "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379"
    assert settings.resolved_redis_url() == settings.broker_url


def test_plain_redis_is_unchanged() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0")
    assert settings.resolved_broker_url() == "redis://127.0.0.1:6379/0"
    assert broker_transport_options(settings) == {}
    assert transport_for(settings.resolved_broker_url()) == "workers.broker:Transport"


def test_a_sentinel_url_without_a_master_name_is_refused() -> None:
    with pytest.raises(SettingsError):
        redis_client("sentinel://127.0.0.1:26379/0")


@pytest.mark.services
def test_a_submit_no_replica_acknowledged_is_refused_and_undone(redis_url: str) -> None:
    store = JobStore(Settings(redis_url=redis_url, redis_wait_replicas=1, redis_wait_timeout_ms=50))
    with pytest.raises(StorageUnavailableError, match="0 of 1 replica"):
        store.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "unreplicated"))
    assert store.get("unreplicated") is None
    assert store.unstarted(0) == []
    # Without the setting the same submit is accepted at once.
    plain = JobStore(Settings(redis_url=redis_url))
    assert plain.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "unreplicated"))[1]
    redis.Redis.from_url(redis_url).close()
