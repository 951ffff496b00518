"""The Redis broker transport, with one kombu fault worked around.

When the connection to Redis is lost, Celery 5.7 tears the transport down before it closes the
consumer's channel; the channel then tries to give its reserved messages back through that
transport and raises ``AttributeError`` ('NoneType' object has no attribute 'hostname'), which
Celery treats as unrecoverable: the worker exits instead of reconnecting. The messages are safe
in Redis's ``unacked`` hash whatever happens here, and come back after the visibility timeout,
so skipping the give-back keeps the worker alive and loses nothing.
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


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str | None) -> str | None:
    """Celery's ``broker_transport`` for this URL: ours for plain Redis, else kombu's choice."""
    if broker_url and broker_url.startswith(("redis://", "rediss://")):
        return "workers.broker:Transport"
    return None
