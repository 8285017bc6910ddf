"""Builds meetq's wheel: the pyo3 crate (setuptools-rust) and the Cython modules.

setuptools (not maturin) drives the build because the wheel holds both a pyo3 crate and
Cython modules, and maturin cannot compile Cython. By default both are built for the
running CPython version, because the stable ABI costs them measured speed (BENCHMARKS.md
`## Packaging`); MEETQ_LIMITED_API=1 builds both for it instead (the Rust crate with its
`abi3` feature: rust/src/capi.rs holds the stable twins of the calls outside it).

Environment:
- `MEETQ_PURE_INSTALL=1`: no extension at all, a pure-Python `py3-none-any` wheel (for a
  platform with no prebuilt wheel and no compiler; `meetq.backend()` is then "pure").
- `MEETQ_LIMITED_API=1`: the Rust module for pyo3's abi3 and the Cython modules against the
  limited API (3.11+), so the whole wheel is `cp311-abi3` and serves every CPython from
  3.11 on (`make wheel-abi3`).
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
                # abi3 only for the single limited-API wheel: it costs the hot paths speed.
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
