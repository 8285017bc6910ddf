"""Backend selection in `meetq._native`, checked in fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import native_module

PROBE = """
import sys, warnings
if {block!r}:
    sys.modules["meetq._meetq_rs"] = None  # as if the extension had not been built
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import meetq
    import meetq.local.bus
print(meetq.backend(), sum(issubclass(w.category, RuntimeWarning) for w in caught))
"""


def probe(block: bool, backend: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEETQ_BACKEND"}
    if backend:
        env["MEETQ_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(block=block)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(native_module("_meetq_rs") is None, reason="no native build")
def test_default_is_native_when_built() -> None:
    assert probe(block=False, backend=None).stdout.split() == ["native", "0"]


def test_missing_extension_falls_back_with_one_warning() -> None:
    out = probe(block=True, backend=None)
    assert out.stdout.split() == ["pure", "1"], out.stderr


def test_pure_is_forced_without_warning() -> None:
    assert probe(block=False, backend="pure").stdout.split() == ["pure", "0"]


def test_native_demanded_but_missing_is_an_error() -> None:
    out = probe(block=True, backend="native")
    assert out.returncode != 0
    assert "meetq._meetq_rs" in out.stderr.splitlines()[-1]


def test_unknown_backend_is_refused() -> None:
    out = probe(block=False, backend="turbo")
    assert out.returncode != 0
    assert "MEETQ_BACKEND" in out.stderr
