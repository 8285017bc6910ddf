"""`meetq gateway --dashboard-port`: the gateway process serves /metrics and the dashboard
on a side port, and the dashboard's actions take the gateway's own signed tokens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from helpers import RedisServer, free_port, wait_until

pytest.importorskip("meetq.gateway")

SECRET = "a-test-secret-of-enough-length"


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text: str = r.read().decode()
            return text
    except OSError:
        return None


def _post(url: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_gateway_serves_metrics_and_dashboard_behind_its_auth(redis_server: RedisServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from meetq.gateway.auth import make_token

    port = free_port()
    env = {**os.environ, "MEETQ_GATEWAY_SECRET": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meetq",
            "--redis-url",
            redis_server.url,
            "gateway",
            "--port",
            "0",
            "--dashboard-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        text = wait_until(lambda: _get(f"{base}/metrics"), timeout=30, interval=0.1)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert "meetq_sessions_connections" in names
        assert "meetq_dispatcher_dispatched" in names
        assert "meetq_queue_ready_messages" in names
        assert "<title>" in (_get(base + "/") or "")
        status, _ = _post(f"{base}/api/dlq/requeue", {"queue": "ai_tasks", "count": 1}, "forged")
        assert status == 401
        token = make_token(SECRET, user_id=1, meeting_id=2)
        status, body = _post(f"{base}/api/dlq/requeue", {"queue": "ai_tasks", "count": 1}, token)
        assert status == 200 and body["requeued"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
