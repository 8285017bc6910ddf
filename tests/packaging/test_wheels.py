"""The release artifacts of `make wheels` (issue 18), tested as a user would install them.

Run by `make test-wheels` (MEETQ_DIST=dist/); skipped in the plain suite. Each wheel goes
into a fresh virtualenv of its interpreter, with no compiler or Rust toolchain on PATH and
no build tools installed, and must import with the native backend and pass smoke.py. The
sdist must hold every source a build needs (`make wheels` builds every wheel from it,
unpacked in a clean directory) and, with MEETQ_PURE_INSTALL=1, install a working
pure-Python meetq where no compiler exists; without it, fail in one clear line. The single
stable-ABI wheel of MEETQ_LIMITED_API=1 (MEETQ_DIST_ABI3, `make wheel-abi3`) must serve
every interpreter from the one file, with the native backend.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DIST = Path(os.environ["MEETQ_DIST"]) if os.environ.get("MEETQ_DIST") else None
ABI3_DIST = Path(os.environ["MEETQ_DIST_ABI3"]) if os.environ.get("MEETQ_DIST_ABI3") else None
pytestmark = pytest.mark.skipif(DIST is None, reason="run by `make test-wheels` (MEETQ_DIST)")
needs_abi3 = pytest.mark.skipif(ABI3_DIST is None, reason="`make test-wheels` (MEETQ_DIST_ABI3)")

# Variables that could hand a build a compiler or a toolchain behind PATH's back.
BUILD_ENV = ("CC", "CXX", "LD", "CARGO", "RUSTC", "RUSTUP_HOME", "PYO3_PYTHON", "PYTHONPATH")


def _interpreters() -> list[str]:
    spec = importlib.util.spec_from_file_location("interpreters", HERE / "interpreters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: list[str] = module.interpreters()
    return found


INTERPRETERS = _interpreters() if DIST else []


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _wheels() -> list[Path]:
    return sorted(DIST.glob("meetq-*.whl")) if DIST else []


def _abi3_wheels() -> list[Path]:
    return sorted(ABI3_DIST.glob("meetq-*.whl")) if ABI3_DIST else []


def _sdist() -> Path:
    assert DIST is not None
    (sdist,) = DIST.glob("meetq-*.tar.gz")
    return sdist


def _wheel_for(version: str) -> Path:
    """The wheel pip would pick for CPython `version` (e.g. "312")."""
    for wheel in _wheels():
        python_tag, abi_tag = wheel.name.split("-")[2:4]
        if python_tag == f"cp{version}" and abi_tag == f"cp{version}":
            return wheel
        if abi_tag == "abi3" and int(python_tag[3:]) <= int(version[1:]):
            return wheel
    raise AssertionError(f"no wheel for CPython {version} in {DIST}")


@pytest.fixture
def bare_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose PATH holds redis-server (for the demo) and nothing to build
    with; each test puts its venv's bin/ in front."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("redis-server",):
        for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
            found = Path(directory) / name
            if found.exists():
                (tools / name).symlink_to(found)
                break
    env = {k: v for k, v in os.environ.items() if k not in BUILD_ENV}
    env = {k: v for k, v in env.items() if not k.startswith(("MEETQ_", "VIRTUAL_ENV"))}
    env["PATH"] = str(tools)
    yield env


def _venv(python: str, where: Path, env: dict[str, str]) -> Path:
    """A fresh venv with pip only (3.11's ensurepip also brings setuptools: removed)."""
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    env["PATH"] = f"{where / 'bin'}{os.pathsep}{env['PATH']}"
    py = where / "bin" / "python"
    _run([py, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], env, check=False)
    return py


def _run(
    cmd: list[Any], env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=900
    )
    if check:
        assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _extras(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(meta).decode()
    return re.findall(r"^Provides-Extra: (\S+)$", text, re.MULTILINE)


def test_dist_holds_an_sdist_and_a_manylinux_wheel_per_interpreter() -> None:
    assert _sdist().name == f"meetq-{_project_version()}.tar.gz"
    for wheel in _wheels():
        assert re.search(r"-manylinux_\d+_\d+_x86_64[.-]", wheel.name), wheel.name
    for python in INTERPRETERS:
        _wheel_for(_version(python))
    assert INTERPRETERS, "no interpreter found"


@pytest.mark.parametrize("wheel", _wheels() + _abi3_wheels(), ids=lambda w: w.name.split("-")[3])
def test_auditwheel_confirms_the_platform_tag(wheel: Path) -> None:
    # The dev venv's auditwheel (make test-wheels), else this interpreter's.
    env_tool = os.environ.get("MEETQ_AUDITWHEEL")
    auditwheel = [env_tool] if env_tool else [sys.executable, "-m", "auditwheel"]
    out = subprocess.run(
        [*auditwheel, "show", str(wheel)],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(out.stdout.split())
    match = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    assert match, out.stdout
    assert match.group(1) in wheel.name, (match.group(1), wheel.name)


@pytest.mark.parametrize("python", INTERPRETERS, ids=lambda p: f"cp{_version(p)}")
def test_wheel_installs_and_runs_with_no_compiler(
    python: str, tmp_path: Path, bare_env: dict[str, str]
) -> None:
    wheel = _wheel_for(_version(python))
    py = _venv(python, tmp_path / "venv", bare_env)
    # The first interpreter takes every extra too, so every optional part imports.
    extras = _extras(wheel) if python == INTERPRETERS[0] else []
    target = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    _run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", target], bare_env)
    out = _run([py, HERE / "smoke.py", "native"], bare_env)
    print(out.stdout)


@needs_abi3
def test_the_abi3_wheel_is_one_cp311_abi3_wheel_of_abi3_modules() -> None:
    import zipfile

    (wheel,) = _abi3_wheels()
    assert re.fullmatch(
        rf"meetq-{re.escape(_project_version())}-cp311-abi3-manylinux_\d+_\d+_x86_64\.whl",
        wheel.name,
    ), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        compiled = sorted(n for n in zf.namelist() if n.endswith(".so"))
    names = [n[len("meetq/") :] for n in compiled if n.count("/") == 1]
    assert names == ["_cy_resp.abi3.so", "_cy_stage.abi3.so", "_meetq_rs.abi3.so"], compiled


@needs_abi3
@pytest.mark.parametrize("python", INTERPRETERS, ids=lambda p: f"cp{_version(p)}")
def test_the_abi3_wheel_installs_and_runs_on_every_interpreter(
    python: str, tmp_path: Path, bare_env: dict[str, str]
) -> None:
    (wheel,) = _abi3_wheels()
    py = _venv(python, tmp_path / "venv", bare_env)
    extras = _extras(wheel) if python == INTERPRETERS[0] else []
    target = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    _run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", target], bare_env)
    out = _run([py, HERE / "smoke.py", "native"], bare_env)
    print(out.stdout)
    installed = re.search(r"^ok install: .* backend=native (\[.*\])$", out.stdout, re.MULTILINE)
    assert installed, out.stdout
    assert installed.group(1).count(".abi3.so") == 3, installed.group(1)
    assert "ok local:" in out.stdout


def _sources() -> list[str]:
    """The repository's source files a build may read (git's list; a plain walk where
    there is no git, e.g. a fresh machine given a copy of the tree)."""
    roots = ["rust/src", "rust/Cargo.toml", "rust/Cargo.lock", "rust/build.rs", "native", "python"]
    try:
        return subprocess.run(
            ["git", "ls-files", *roots], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for root in roots:
        path = ROOT / root
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if not re.search(r"(__pycache__|\.egg-info|\.so$|\.c$|\.py[cod]$)", rel):
                found.append(rel)
    return found


def test_sdist_holds_every_source_a_build_needs() -> None:
    tracked = _sources()
    tracked += ["setup.py", "pyproject.toml", "README.md", "CHANGELOG.md", "MANIFEST.in"]
    with tarfile.open(_sdist()) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [p for p in tracked if p not in names and (ROOT / p).exists()]
    assert not missing, f"the sdist lacks {missing}"
    built = [
        n for n in names if n.endswith((".so", ".c")) or n.startswith(("rust/target", "build/"))
    ]
    assert not built, f"the sdist holds build output: {built}"


def test_build_tools_are_pinned_alike() -> None:
    pins = {}
    for line in (ROOT / "requirements-build.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements-build.txt: {line!r} is not pinned"
            pins[name.lower()] = version
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in requires:
        name, sep, version = req.partition("==")
        assert sep, f"[build-system] requires {req!r} unpinned"
        assert pins.get(name.lower()) == version, f"{req} vs requirements-build.txt"


def test_pure_install_of_the_sdist_with_no_compiler(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    py = _venv(INTERPRETERS[0], tmp_path / "venv", bare_env)
    env = {**bare_env, "MEETQ_PURE_INSTALL": "1"}
    out = _run([py, "-m", "pip", "install", "-v", "--only-binary=:all:", _sdist()], env)
    assert re.search(r"filename=meetq-[^ ]+-py3-none-any\.whl", out.stdout), out.stdout[-2000:]
    print(_run([py, HERE / "smoke.py", "pure"], bare_env).stdout)


def test_native_build_with_no_compiler_fails_in_one_clear_line(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    py = _venv(INTERPRETERS[0], tmp_path / "venv", bare_env)
    out = _run([py, "-m", "pip", "install", "--only-binary=:all:", _sdist()], bare_env, check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    line = next(ln for ln in text.splitlines() if "meetq: the native build needs" in ln)
    assert "cargo" in line and "a C compiler" in line and "MEETQ_PURE_INSTALL=1" in line, line


def _project_version() -> str:
    text = (ROOT / "python" / "meetq" / "_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match
    return match.group(1)
