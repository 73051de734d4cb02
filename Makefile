# Targets behind the two README commands. Each installs what it needs, so both work on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
EXTRAS ?= diffusers,test

.PHONY: setup demo test test-rust test-python lint bench clean

setup:  ## build the Rust extension and install glass_core with its extras (editable)
	$(PIP) install --upgrade pip maturin
	$(PIP) install -e ".[$(EXTRAS)]"

demo: setup  ## the main job on the embedded default model and reward
	glass-core demo --out glass_out

test: setup test-rust test-python  ## everything CI runs

test-rust:
	cargo test --release

test-python:
	$(PYTHON) -m pytest

lint:
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	ruff check python tests benches scripts
	$(PYTHON) -m mypy.stubtest glass_core._core

bench:  ## benchmark tables (figures, not pass/fail)
	cargo bench --bench resample
	glass-core bench

clean:
	cargo clean
	rm -rf glass_out .pytest_cache .benchmarks
