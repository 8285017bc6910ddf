# meetq: `make demo` runs the main job, `make test` runs everything (build, both backends, lint).
# Both work on a fresh Debian machine as root: they install what they need.

PYTHON ?= python3
VENV := .venv
TESTVENV := .venv-test
PY := $(VENV)/bin/python
TPY := $(TESTVENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test system-deps venv dev wheel testenv test-native test-pure lint rust bench bench-smoke bench-peers clean

# Debian packages the build, the demo and the tests need (one list; add to it, don't fork it).
APT_PACKAGES := redis-server openssl prometheus chromium espeak-ng

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust toolchain) is required"; exit 1; }

$(VENV)/.stamp: requirements-dev.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# In-place build for development: the extensions land in python/meetq/.
dev: system-deps venv
	$(PY) -m pip install -q --no-build-isolation -e .

# The wheel that CI tests: Rust crate + Cython modules in one file.
wheel: venv
	rm -rf dist
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w dist .

# A fresh venv holding only the built wheel and the test tools: the suite runs against it.
testenv: wheel
	rm -rf $(TESTVENV)
	$(PYTHON) -m venv $(TESTVENV)
	$(TPY) -m pip install -q dist/meetq-*.whl -r requirements-test.txt

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

rust:
	cd rust && cargo clippy --release --features extension-module -- -D warnings
	cd rust && cargo clippy --release --all-targets -- -D warnings
	cd rust && cargo test --release

test: system-deps lint rust test-native test-pure bench-smoke

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
