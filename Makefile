# meetq: `make demo` runs the main job, `make test` runs everything (build, both backends, lint).
# Both work on a fresh Debian machine as root: they install what they need.

PYTHON ?= python3
VENV := .venv
TESTVENV := .venv-test
PY := $(VENV)/bin/python
TPY := $(TESTVENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test system-deps venv dev wheel wheels wheel-abi3 sdist test-wheels msrv cargo-lock testenv test-native test-pure lint rust bench bench-smoke bench-peers clean

# Debian packages the build, the demo and the tests need (one list; add to it, don't fork it).
APT_PACKAGES := redis-server openssl prometheus chromium espeak-ng gcc libc6-dev python3-dev python3-venv ca-certificates
# Installed only where no Rust toolchain is on PATH: Debian's (rustc 1.63 on Debian 12, the
# crate's rust-version).
APT_RUST := rustc cargo rust-clippy

# Debian 12's cargo (1.65) reaches crates.io only through its sparse index, which cargo
# < 1.68 gates behind a nightly flag: this turns it on for cargo alone (not for rustc).
CARGO_ENV = $(shell cargo --version 2>/dev/null | awk '{split($$2, v, "."); if (v[1] == 1 && v[2] < 68) print "__CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly CARGO_UNSTABLE_SPARSE_REGISTRY=true"}')

system-deps:
	@missing=$$(for p in $(APT_PACKAGES) $$(command -v cargo >/dev/null 2>&1 || echo $(APT_RUST)); do \
		dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null 2>&1 || { echo "meetq: no Rust toolchain: install cargo and rustc >= 1.63 (Debian: apt-get install cargo)"; exit 1; }

$(VENV)/.stamp: requirements-build.txt requirements-dev.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-build.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# In-place build for development: the extensions land in python/meetq/.
dev: system-deps venv
	rm -f python/meetq/_meetq_rs.*.so  # a stale abi3 one must not linger beside it
	$(CARGO_ENV) PYO3_PYTHON=$(CURDIR)/$(PY) $(PY) -m pip install -q --no-build-isolation -e .

# Release artifacts in dist/: the sdist, and built from it (pip unpacks it into a clean
# temporary directory, so a file missing from MANIFEST.in breaks the build) one wheel per
# CPython this machine has (tests/packaging/interpreters.py), repaired and tagged manylinux
# by auditwheel. The native modules are per-version: the stable ABI costs both the Rust and
# the Cython ones speed (BENCHMARKS.md `## Packaging`); wheel-abi3 builds the single one.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' python/meetq/_version.py)
SDIST = dist/meetq-$(VERSION).tar.gz
BUILDVENVS := build/venvs

sdist: venv
	rm -rf dist build/wheelhouse
	$(PY) -m build -q --sdist --no-isolation --outdir dist . >/dev/null

wheels: system-deps sdist
	@set -e; for py in $$($(PYTHON) tests/packaging/interpreters.py); do \
		v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); bv=$(BUILDVENVS)/$$v; \
		[ -f $$bv/.stamp ] && [ $$bv/.stamp -nt requirements-build.txt ] || { rm -rf $$bv; \
			$$py -m venv $$bv && $$bv/bin/python -m pip install -q -r requirements-build.txt && touch $$bv/.stamp; }; \
		echo "building the CPython $$v wheel from $(SDIST)"; \
		$(CARGO_ENV) CARGO_TARGET_DIR=$(CURDIR)/rust/target \
			$$bv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w build/wheelhouse $(SDIST); \
	done
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair -w dist build/wheelhouse/*.whl \
		> build/auditwheel.log 2>&1 || { cat build/auditwheel.log; exit 1; }
	@ls dist

wheel: wheels

# The single stable-ABI wheel (MEETQ_LIMITED_API=1: the Rust module for pyo3's abi3, the
# Cython ones for the limited API), built from the sdist by the first interpreter into
# $(ABI3_DIST)/ and repaired like the others. Not a release artifact: the per-version
# wheels are faster (BENCHMARKS.md `## Packaging`); test-wheels installs it on every
# interpreter. --no-cache-dir: pip must not hand back the cp311 wheel it just built.
ABI3_DIST := build/dist-abi3

wheel-abi3: wheels
	@set -e; py=$$($(PYTHON) tests/packaging/interpreters.py | cut -d' ' -f1); \
		v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
		rm -rf $(ABI3_DIST) build/wheelhouse-abi3; \
		echo "building the cp311-abi3 wheel with CPython $$v from $(SDIST)"; \
		MEETQ_LIMITED_API=1 $(CARGO_ENV) CARGO_TARGET_DIR=$(CURDIR)/rust/target \
			$(BUILDVENVS)/$$v/bin/python -m pip wheel -q --no-deps --no-build-isolation \
			--no-cache-dir -w build/wheelhouse-abi3 $(SDIST)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair -w $(ABI3_DIST) \
		build/wheelhouse-abi3/*.whl > build/auditwheel-abi3.log 2>&1 || { cat build/auditwheel-abi3.log; exit 1; }
	@ls $(ABI3_DIST)

# A fresh venv holding only the built wheel and the test tools: the suite runs against it.
testenv: wheels
	rm -rf $(TESTVENV)
	$(PYTHON) -m venv $(TESTVENV)
	$(TPY) -m pip install -q --no-index --find-links dist --only-binary meetq --no-deps meetq
	$(TPY) -m pip install -q meetq -r requirements-test.txt

# Each wheel in a fresh venv with no compiler on PATH and no build tools (native backend,
# a smoke of every component), auditwheel's platform tag, the sdist's contents, and the
# pure install of the sdist (MEETQ_PURE_INSTALL=1) with no compiler; the abi3 wheel the same
# way on every interpreter.
test-wheels: testenv wheel-abi3
	MEETQ_DIST=$(CURDIR)/dist MEETQ_DIST_ABI3=$(CURDIR)/$(ABI3_DIST) \
		MEETQ_AUDITWHEEL=$(CURDIR)/$(VENV)/bin/auditwheel \
		$(TPY) -m pytest -q tests/packaging

# The crate with its declared rust-version (Debian 12's rustc/cargo, installed if absent):
# the extension built per-version and for the stable ABI (abi3), and cargo test, from the
# pinned Cargo.lock.
msrv:
	@[ -x /usr/bin/cargo ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_RUST); }
	cd rust && RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$(CURDIR)/build/msrv-target \
		__CARGO_TEST_CHANNEL_OVERRIDE_DO_NOT_USE_THIS=nightly CARGO_UNSTABLE_SPARSE_REGISTRY=true \
		sh -c '/usr/bin/cargo build --locked --release --features extension-module && \
			/usr/bin/cargo build --locked --release --features extension-module,abi3 && \
			/usr/bin/cargo test --locked --release'

# Re-resolves Cargo.lock within the crate's rust-version (cargo >= 1.84's MSRV-aware resolver).
cargo-lock:
	cd rust && CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo update

# The same suite on both backends, importing meetq from the installed wheel.
test-native: testenv
	MEETQ_BACKEND=native MEETQ_EXPECT_INSTALLED=1 $(TPY) -m pytest -q $(PYTEST_ARGS) tests

test-pure: testenv
	MEETQ_BACKEND=pure MEETQ_EXPECT_INSTALLED=1 $(TPY) -m pytest -q $(PYTEST_ARGS) tests

# Every micro benchmark once, on tiny workloads, so they cannot rot (numbers: `make bench`).
bench-smoke: testenv
	MEETQ_BACKEND=native MEETQ_BENCH_SCALE=0.02 $(TPY) -m pytest -q benchmarks --benchmark-disable

lint: venv
	$(PY) -m ruff check python tests benchmarks
	$(PY) -m ruff format --check python tests benchmarks
	$(PY) -m mypy python/meetq

# Clippy's verdict is the current toolchain's: the MSRV's clippy (Debian 12's 1.63) has
# lints since retired or fixed, so there its warnings are shown, not fatal.
CLIPPY_DENY = $(shell rustc --version 2>/dev/null | awk '{split($$2, v, "."); if (v[1] > 1 || v[2] > 63) print "-D warnings"}')

rust:
	cd rust && $(CARGO_ENV) cargo clippy --release --features extension-module -- $(CLIPPY_DENY)
	cd rust && $(CARGO_ENV) cargo clippy --release --features extension-module,abi3 -- $(CLIPPY_DENY)
	cd rust && $(CARGO_ENV) cargo clippy --release --all-targets -- $(CLIPPY_DENY)
	cd rust && $(CARGO_ENV) cargo test --release

test: system-deps lint rust test-native test-pure bench-smoke test-wheels

demo: system-deps dev
	$(PY) -m meetq demo

bench: system-deps testenv
	MEETQ_BACKEND=native $(TPY) -m pytest benchmarks --benchmark-only --benchmark-json=bench.json
	$(TPY) benchmarks/report.py bench.json

# Side-by-side with arq, taskiq, saq, dramatiq, celery, rq, huey (their own venv; ~15 min,
# PEERS_ARGS=--smoke for ~3 min).
BENCHVENV := .venv-bench
$(BENCHVENV)/.stamp: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(BENCHVENV)
	$(BENCHVENV)/bin/python -m pip install -q --upgrade pip
	$(BENCHVENV)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	touch $@

bench-peers: system-deps dev $(BENCHVENV)/.stamp
	$(PY) benchmarks/peers/run.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) $(TESTVENV) build dist rust/target python/meetq/*.so native/*.c
