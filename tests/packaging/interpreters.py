"""Prints the CPython interpreters `make wheels` builds for: one per version >= 3.11.

The interpreter running this script comes first; then `python3.N` on PATH and pyenv's
versions. An interpreter counts only if it can build and test a wheel: it has its headers
(Python.h) and venv with ensurepip, and is not a free-threaded build. MEETQ_WHEEL_PYTHONS
(space-separated paths) overrides the search.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

OLDEST = (3, 11)
PROBE = (
    "import ensurepip, os, sys, sysconfig, venv; "
    "h = os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')); "
    "ft = bool(sysconfig.get_config_var('Py_GIL_DISABLED')); "
    "ok = h and not ft and sys.implementation.name == 'cpython'; "
    "print('%d.%d' % sys.version_info[:2] if ok else '')"
)


def candidates() -> list[str]:
    found = [sys.executable]
    for minor in range(OLDEST[1], 20):
        path = shutil.which(f"python3.{minor}")
        if path and "/shims/" not in path:
            found.append(path)
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3.*[0-9]")))
    return found


def version_of(path: str) -> str:
    try:
        out = subprocess.run([path, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def interpreters() -> list[str]:
    override = os.environ.get("MEETQ_WHEEL_PYTHONS", "").split()
    chosen: dict[str, str] = {}
    for path in override or candidates():
        version = version_of(path)
        if not version:
            if override:
                sys.exit(f"MEETQ_WHEEL_PYTHONS: {path} cannot build a wheel (no headers or venv)")
            continue
        major, minor = map(int, version.split("."))
        if (major, minor) >= OLDEST and version not in chosen:
            chosen[version] = os.path.realpath(path) if path != sys.executable else path
    return list(chosen.values())


if __name__ == "__main__":
    print(" ".join(interpreters()))
