"""The dashboard end to end in a real headless Chromium (Debian's, driven by Playwright):
the page loads, shows a queue depth the test changes (pushed, not polled), a requeue click
moves a dead letter back, and a screenshot is kept as a test artifact."""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_metrics import _stream_with_backlog

from helpers import RedisServer, async_wait_until, redis_client
from meetq import LocalEventBus, Message, Priority, RedisMessageQueue
from meetq.ops.dashboard import Dashboard
from meetq.ops.http import HttpServer
from meetq.ops.metrics import MetricsHub
from meetq.ops.queues import QueueInspector

TOKEN = "test-token-123"
ARTIFACTS = Path(os.environ.get("MEETQ_TEST_ARTIFACTS", "test-artifacts"))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium missing: the Makefile's APT_PACKAGES installs it")


async def _publish(url: str, queue: str, msgs: list[Message]) -> None:
    q = RedisMessageQueue(url, queue)
    try:
        await q.publish_batch(msgs)
    finally:
        await q.stop()


async def _dead_letters(url: str, queue: str, n: int) -> None:
    """n messages in the DLQ: a consumer with no handler for their type."""
    async with RedisMessageQueue(url, queue, workers=1) as q:
        q.register_handler("other", lambda m: None)
        await q.publish_batch(
            [Message(type="transcode", payload={"i": i}, priority=Priority.HIGH) for i in range(n)]
        )
        await async_wait_until(lambda: _dlq_at_least(q, n), timeout=30)


async def _dlq_at_least(q: RedisMessageQueue, n: int) -> bool:
    return await q.dead_letter_count() >= n


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def _size(path: Path) -> int:
    return path.stat().st_size


class Board:
    def __init__(self, url: str, queues: list[str]) -> None:
        self.inspector = QueueInspector(url)
        self.hub = MetricsHub(self.inspector, queues, cache_ttl=0.2)
        self.bus = LocalEventBus(buffer_size=8, workers=1)
        self.hub.add_component("bus", "media", self.bus.get_stats)
        self.hub.add_component("sessions", "gateway", lambda: {"active_sessions": 42})
        self.hub.watch_stream("meeting_events")
        self.board = Dashboard(self.hub, token=TOKEN, interval=0.2, title="meetq test")
        self.server = HttpServer()
        self.hub.routes(self.server)
        self.board.routes(self.server)

    async def __aenter__(self) -> Board:
        await self.board.start()
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        await self.board.stop()
        await self.inspector.close()


def _request(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


async def _call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, _request, url, body, token)


async def test_dashboard_in_a_real_browser(redis_server: RedisServer) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=20_000)  # a loaded machine; only bounds a failure
    url = redis_server.url
    await _dead_letters(url, "media_tasks", 3)
    await _stream_with_backlog(url, "meeting_events")
    await _publish(
        url, "ai_tasks", [Message(type="asr", priority=Priority.CRITICAL) for _ in range(2)]
    )
    async with Board(url, ["ai_tasks", "media_tasks"]) as board, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{board.server.url}/#token={TOKEN}")
            ai_row = page.locator('tr[data-queue="ai_tasks"]')
            await expect(ai_row.locator('td[data-field="ready-critical"]')).to_have_text("2")
            await expect(page.locator("#conn")).to_have_text("live")

            # the test changes the depth; the page shows it by push (no reload, no poll)
            await _publish(
                url, "ai_tasks", [Message(type="asr", priority=Priority.LOW) for _ in range(5)]
            )
            await expect(ai_row.locator('td[data-field="ready-low"]')).to_have_text("5")
            await expect(ai_row.locator('td[data-field="ready_total"]')).to_have_text("7")
            await expect(page.locator("#sessions")).to_contain_text("active_sessions")
            await expect(page.locator("#streams")).to_contain_text("media-service: lag")

            # the DLQ of media_tasks: 3 entries with their reason; requeue one by a click
            media = page.locator('tr[data-queue="media_tasks"]')
            await expect(media.locator('td[data-field="dead_letters"]')).to_have_text("3")
            await page.select_option("#dlq-queue", "media_tasks")
            await page.click("#dlq-form button[type=submit]")
            await expect(page.locator("#dlq tbody tr")).to_have_count(3)
            await expect(page.locator("#dlq tbody")).to_contain_text("no handler")
            await page.fill("#requeue-count", "1")
            await page.click("#requeue")
            await expect(page.locator("#dlq-action")).to_have_text("requeued 1")
            await expect(media.locator('td[data-field="dead_letters"]')).to_have_text("2")
            await expect(media.locator('td[data-field="ready-high"]')).to_have_text("1")
            async with redis_client(url) as r:
                assert await r.zcard("meetq:{media_tasks}:dlq") == 2
                assert await r.llen("meetq:{media_tasks}:ready:2") == 1
            await expect(page.locator("#dlq tbody tr")).to_have_count(2)

            shot = _artifact("dashboard.png")
            await page.screenshot(path=str(shot), full_page=True)
            assert _size(shot) > 10_000
        finally:
            await browser.close()


async def test_actions_need_the_token(redis_server: RedisServer) -> None:
    url = redis_server.url
    await _dead_letters(url, "q", 2)
    async with Board(url, ["q"]) as board:
        base = board.server.url
        for token in (None, "wrong"):
            status, body = await _call(f"{base}/api/dlq/requeue", {"queue": "q", "count": 1}, token)
            assert status == 401, body
            status, _ = await _call(f"{base}/api/dlq/purge", {"queue": "q", "confirm": "q"}, token)
            assert status == 401
        status, body = await _call(f"{base}/api/dlq/requeue", {"queue": "q", "count": 0}, TOKEN)
        assert status == 400 and "count" in body["error"]
        status, body = await _call(f"{base}/api/dlq/purge", {"queue": "q"}, TOKEN)
        assert status == 400 and "confirm" in body["error"]
        status, _ = await _call(
            f"{base}/api/dlq/purge", {"queue": "nope", "confirm": "nope"}, TOKEN
        )
        assert status == 404
        async with redis_client(url) as r:
            assert await r.zcard("meetq:{q}:dlq") == 2
        status, body = await _call(f"{base}/api/dlq/purge", {"queue": "q", "confirm": "q"}, TOKEN)
        assert status == 200 and body["purged"] == 2


async def test_dlq_pages_through_a_large_dlq_with_filters(redis_server: RedisServer) -> None:
    """20,000 dead letters: a page reads only its own entries; a filter reads on in chunks."""
    url = redis_server.url
    async with redis_client(url) as r:
        codec_q = RedisMessageQueue(r, "big")
        pipe = r.pipeline(transaction=False)
        for i in range(20_000):
            mid = f"m{i:05d}"
            mtype = "rare" if i % 1000 == 999 else "common"
            body = codec_q.codec.encode(Message(type=mtype, id=mid, timestamp=1.0))
            pipe.hset("meetq:{big}:msg", mid, b"1" + body)
            pipe.zadd("meetq:{big}:dlq", {mid: i})
            reason = "timeout after 30s" if i % 2 else "ValueError: bad input"
            pipe.hset("meetq:{big}:dlqinfo", mid, orjson.dumps({"reason": reason, "time": i}))
        await pipe.execute()
        await codec_q.stop()
    async with Board(url, ["big"]) as board:
        base = board.server.url
        status, page = await _call(f"{base}/api/dlq?queue=big&offset=19990&limit=25")
        assert status == 200 and page["total"] == 20_000
        assert [e["id"] for e in page["entries"]] == [f"m{i:05d}" for i in range(19990, 20000)]
        assert page["next_offset"] is None
        status, page = await _call(f"{base}/api/dlq?queue=big&type=rare&limit=5")
        assert [e["id"] for e in page["entries"]] == [
            f"m{i:05d}" for i in (999, 1999, 2999, 3999, 4999)
        ]
        assert page["next_offset"] == 5000
        status, page = await _call(
            f"{base}/api/dlq?queue=big&type=rare&reason=timeout&limit=3&offset=5000"
        )
        assert [e["id"] for e in page["entries"]] == ["m05999", "m06999", "m07999"]
        status, page = await _call(f"{base}/api/dlq?queue=big&limit=9999")
        assert status == 400
