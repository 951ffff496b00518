"""The Redis broker transport, with one kombu fault worked around and one cost cut.

When the connection to Redis is lost, Celery 5.7 tears the transport down before it closes the
consumer's channel; the channel then tries to give its reserved messages back through that
transport and raises ``AttributeError`` ('NoneType' object has no attribute 'hostname'), which
Celery treats as unrecoverable: the worker exits instead of reconnecting. The messages are safe
in Redis's ``unacked`` hash whatever happens here, and come back after the visibility timeout,
so skipping the give-back keeps the worker alive and loses nothing.

The cost: kombu builds a new redis-py client (its response-callback tables and all) for every
reservation and acknowledgement, a fifth of a millisecond of CPU per message each time; a channel
here keeps one per connection pool. redis-py clients are thread-safe; the pool is what holds the
connections, and a new pool (after a reconnect) gets a new client.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        try:
            return super().restore_unacked(client)
        except AttributeError:
            log.warning(
                "connection to the broker lost: %d reserved message(s) stay unacked in Redis and "
                "return after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: tuple[Any, Any] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._sync_client is None or self._sync_client[0] is not pool:
            self._sync_client = (pool, super()._create_client())
        return self._sync_client[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same channel on a Sentinel-managed primary: a failover loses the connection too."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str | None) -> str | None:
    """Celery's ``broker_transport`` for this URL: ours for plain Redis and for Sentinel
    (``sentinel://``), else kombu's choice."""
    if broker_url and broker_url.startswith(("redis://", "rediss://")):
        return "workers.broker:Transport"
    if broker_url and broker_url.startswith("sentinel://"):
        return "workers.broker:SentinelTransport"
    return None
