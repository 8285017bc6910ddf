"""`import meetq` loads the core only: the optional parts' dependencies stay unimported
until their names are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

OPTIONAL = ("websockets", "picows", "zmq", "prometheus_client", "rich", "playwright",
            "pocketsphinx", "vaderSentiment", "msgpack")  # fmt: skip


def test_import_meetq_pulls_in_no_optional_dependency() -> None:
    code = (
        "import sys, meetq; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_unknown_names_raise_attribute_error() -> None:
    import meetq

    with pytest.raises(AttributeError, match="NoSuchThing"):
        meetq.NoSuchThing  # noqa: B018
    assert meetq.__version__ and isinstance(meetq.__version__, str)
