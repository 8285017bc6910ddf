"""Builds meetq's wheel: the pyo3 crate (setuptools-rust) and the Cython modules.

setuptools (not maturin) drives the build because the wheel holds both a pyo3 crate and
Cython modules, and maturin cannot compile Cython. The Rust extension is always built for
the stable ABI only with MEETQ_LIMITED_API=1 (its scheduler core uses CPython internals
outside it, so that build fails until it does not); the Cython modules are built per CPython
version by default, because the limited API costs them measured speed (BENCHMARKS.md).

Environment:
- `MEETQ_PURE_INSTALL=1`: no extension at all, a pure-Python `py3-none-any` wheel (for a
  platform with no prebuilt wheel and no compiler; `meetq.backend()` is then "pure").
- `MEETQ_LIMITED_API=1`: the Cython modules too against the limited API (3.11+), so the
  whole wheel is `cp311-abi3` and serves every CPython from 3.11 on.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import warnings

from setuptools import Extension, setup

BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "build_rust", "develop", "editable_wheel"}
CYTHON_MODULES = ("resp", "stage")
LIMITED_API_HEX = "0x030B0000"  # Python 3.11, the oldest supported


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _missing_tools() -> list[str]:
    """What a native build needs and this machine lacks, each named as what to install."""
    missing = []
    if not shutil.which(os.environ.get("CARGO", "cargo")):
        missing.append("cargo and rustc (Rust >= 1.63)")
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        missing.append(f"a C compiler ({cc})")
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        missing.append(f"the Python {sys.version_info[0]}.{sys.version_info[1]} headers")
    return missing


def _native_extensions(limited: bool) -> dict[str, object]:
    from Cython.Build import cythonize
    from setuptools_rust import Binding, RustExtension

    warnings.filterwarnings("ignore", "`RustExtension.py_limited_api`", DeprecationWarning)
    macros = [("Py_LIMITED_API", LIMITED_API_HEX)] if limited else []
    cython_modules = [
        Extension(
            f"meetq._cy_{name}",
            [f"native/{name}.pyx"],
            extra_compile_args=["-O3"],
            define_macros=macros,
            py_limited_api=limited,
        )
        for name in CYTHON_MODULES
    ]
    return {
        "rust_extensions": [
            RustExtension(
                "meetq._meetq_rs",
                path="rust/Cargo.toml",
                binding=Binding.PyO3,
                # abi3 only for the single limited-API wheel: the scheduler core
                # (py_sched.rs, py_task.rs) uses CPython internals outside the stable ABI.
                features=["extension-module", *(["abi3"] if limited else [])],
                debug=False,
            )
        ],
        "ext_modules": cythonize(
            cython_modules,
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False},
        ),
    }


def _options() -> dict[str, object]:
    if _flag("MEETQ_PURE_INSTALL"):
        return {}
    if BUILD_COMMANDS & set(sys.argv[1:]):
        missing = _missing_tools()
        if missing:
            sys.exit(
                f"meetq: the native build needs {', '.join(missing)}: install them (Debian: "
                "apt-get install cargo gcc python3-dev), or set MEETQ_PURE_INSTALL=1 for the "
                "pure-Python backend"
            )
    limited = _flag("MEETQ_LIMITED_API")
    options = _native_extensions(limited)
    if limited:
        options["options"] = {"bdist_wheel": {"py_limited_api": "cp311"}}
    return options


setup(zip_safe=False, **_options())  # type: ignore[arg-type]
