"""`meetq._redis.links`: the one reconnect policy (`retrying`, `Outage`, `is_transient`) and
`Endpoint`'s handling of URLs and clients."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio
import redis.asyncio.connection
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError

from meetq._redis.links import Endpoint
from meetq._redis.retry import Outage, is_transient, retrying
from meetq.errors import MeetqConnectionError


def test_transient_errors() -> None:
    assert is_transient(ReadOnlyError("READONLY"))
    assert is_transient(BusyLoadingError("LOADING"))
    assert is_transient(ResponseError("MASTERDOWN Link with MASTER is down"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ResponseError("WRONGTYPE Operation against a key"))
    assert not is_transient(ValueError("x"))


async def test_retrying_gives_up_with_one_meetq_error_and_the_cause() -> None:
    calls = 0

    async def replica() -> None:
        nonlocal calls
        calls += 1
        raise ResponseError("MASTERDOWN Link with MASTER is down")

    with pytest.raises(MeetqConnectionError, match="redis unavailable for thing: ") as info:
        await retrying(replica, 0.2, "thing")
    assert isinstance(info.value.__cause__, ResponseError)
    assert calls > 1  # retried with backoff within the budget

    async def wrong() -> None:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError):  # not transient: raised at once, as it is
        await retrying(wrong, 5.0, "thing")


def test_outage_logs_once_then_one_error_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "meetq.redis")
    downs: list[MeetqConnectionError] = []
    ups: list[bool] = []
    outage = Outage("worker", budget=0.0, on_down=downs.append, on_up=lambda: ups.append(True))
    pauses = [outage.failed(ReadOnlyError("READONLY")) for _ in range(30)]
    assert all(0 < p <= 5.0 for p in pauses)
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1 and levels.count(logging.ERROR) == 1
    assert len(downs) == 1 and isinstance(downs[0].__cause__, ReadOnlyError)
    assert outage.error is downs[0]
    outage.succeeded()
    assert outage.error is None and ups == [True]
    outage.succeeded()  # no outage: nothing to report
    assert ups == [True]


async def test_unix_url_makes_no_tcp_options() -> None:
    endpoint = Endpoint("unix:///tmp/nowhere.sock?db=0")
    try:
        kwargs = endpoint.client.connection_pool.connection_kwargs
        assert "socket_keepalive" not in kwargs
        assert endpoint.url == "unix:///tmp/nowhere.sock?db=0"
    finally:
        await endpoint.close()


async def test_a_decoding_client_is_cloned_or_refused() -> None:
    given = redis.asyncio.Redis(port=1, decode_responses=True)
    endpoint = Endpoint(given)
    assert endpoint.client is not given and endpoint.owns_client
    assert not endpoint.client.get_encoder().decode_responses
    await endpoint.close()
    await given.aclose()

    class Custom(redis.asyncio.connection.Connection):
        pass

    pool = redis.asyncio.ConnectionPool(connection_class=Custom, decode_responses=True)
    custom = redis.asyncio.Redis(connection_pool=pool)
    with pytest.raises(ValueError, match="decode_responses=True"):
        Endpoint(custom)
    await custom.aclose()
