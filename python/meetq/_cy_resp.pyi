"""Type stub of `native/resp.pyx`; pure twin in `_resp.py`."""

from collections.abc import Iterable
from typing import Any

def encode_command(args: Iterable[Any]) -> bytes: ...
def encode_commands(commands: Iterable[Iterable[Any]]) -> bytes: ...
