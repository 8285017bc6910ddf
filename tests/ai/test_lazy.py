"""`import meetq` must not import zmq; the AI names load on first use."""

from __future__ import annotations

import subprocess
import sys


def test_import_meetq_does_not_import_zmq() -> None:
    code = (
        "import sys, meetq; assert 'zmq' not in sys.modules, 'zmq imported'; "
        "c = meetq.StackFlowClient; assert 'zmq' in sys.modules; "
        "from meetq.ai import StackFlowClient; assert c is StackFlowClient; "
        "assert issubclass(meetq.StackFlowError, meetq.MeetqError); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
