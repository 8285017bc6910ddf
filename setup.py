"""Builds the two native cores into one wheel.

setuptools (not maturin) drives the build because the wheel holds both a pyo3 crate
(via setuptools-rust) and Cython modules, and maturin cannot compile Cython.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools_rust import Binding, RustExtension

cython_modules = [
    Extension(f"meetq._cy_{name}", [f"native/{name}.pyx"], extra_compile_args=["-O3"])
    for name in ("dispatch", "resp", "stage")
]

setup(
    rust_extensions=[
        RustExtension(
            "meetq._meetq_rs",
            path="rust/Cargo.toml",
            binding=Binding.PyO3,
            features=["extension-module"],
            debug=False,
        )
    ],
    ext_modules=cythonize(
        cython_modules,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
    zip_safe=False,
)
