"""Pipelines of Lua scripts sent as EVALSHA alone (shared.storage.redis_client.execute_scripted):
one round trip, no SCRIPT EXISTS, and correct after Redis forgot its scripts."""

from __future__ import annotations

import pytest
import redis

from shared.storage.redis_client import execute_scripted

COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('REFUSED ' .. ARGV[1])"


def _script_exists_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_script|exists", {}).get("calls", 0))


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_scripts_and_commands_answer_in_order_without_script_exists(client: redis.Redis) -> None:
    count = client.register_script(COUNT)
    client.script_load(COUNT)
    before = _script_exists_calls(client)
    pipe = client.pipeline(transaction=False)
    count(keys=["a"], args=[2], client=pipe)
    pipe.set("b", "x")
    count(keys=["a"], args=[3], client=pipe)
    assert execute_scripted(pipe) == [2, True, 5]
    assert _script_exists_calls(client) == before


def test_forgotten_scripts_are_loaded_and_only_their_calls_sent_again(client: redis.Redis) -> None:
    count = client.register_script(COUNT)
    client.script_flush()
    pipe = client.pipeline(transaction=False)
    pipe.incr("plain")
    count(keys=["a"], args=[2], client=pipe)
    pipe.incr("plain")
    count(keys=["a"], args=[3], client=pipe)
    assert execute_scripted(pipe) == [1, 2, 2, 5]
    # Each call ran once: the plain commands were not repeated with the scripts.
    assert client.get("a") == b"5" and client.get("plain") == b"2"
    assert client.script_exists(count.sha) == [True]


def test_the_first_error_is_raised_after_every_call_ran(client: redis.Redis) -> None:
    count, fail = client.register_script(COUNT), client.register_script(FAIL)
    client.script_flush()
    pipe = client.pipeline(transaction=False)
    fail(args=["one"], client=pipe)
    count(keys=["a"], args=[1], client=pipe)
    with pytest.raises(redis.ResponseError, match="REFUSED one"):
        execute_scripted(pipe)
    assert client.get("a") == b"1"
