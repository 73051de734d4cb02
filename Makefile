# Targets behind the two README commands. Each installs what it needs, so both work on a fresh machine;
# an install is re-run only when pyproject.toml or the Rust sources change (stamps in .make/).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMPS := .make
RUST_SOURCES := Cargo.toml Cargo.lock $(wildcard rust/*.rs)

.PHONY: demo test test-fast test-rust test-python lint bench docs clean

# editable install of glass_core with the extras after the dash (builds the Rust extension)
$(STAMPS)/install-%: pyproject.toml $(RUST_SOURCES)
	$(PIP) install --upgrade pip maturin
	$(PIP) install -e ".[$*]"
	@mkdir -p $(STAMPS) && touch $@

demo: $(STAMPS)/install-demo  ## the main job on the embedded default model and reward (demo extra only)
	$(PYTHON) -m glass_core demo --overwrite

test: $(STAMPS)/install-diffusers,test test-rust test-python  ## everything CI runs

test-fast: $(STAMPS)/install-diffusers,test  ## the suite without the tests marked slow
	cargo test --release
	$(PYTHON) -m pytest -m "not slow"

test-rust:
	cargo test --release

test-python:
	$(PYTHON) -m pytest

lint: $(STAMPS)/install-diffusers,test
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	cargo fmt --check
	ruff check python tests benches scripts examples
	ruff format --check python tests benches scripts examples
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest glass_core._core

bench: $(STAMPS)/install-diffusers,test  ## benchmark tables (figures, not pass/fail)
	cargo bench --bench resample
	$(PYTHON) -m glass_core bench --overwrite

clean:
	cargo clean
	rm -rf $(STAMPS) glass_out .pytest_cache .benchmarks site

docs: $(STAMPS)/install-docs  ## the documentation site (mkdocs build --strict) into site/
	$(PYTHON) -m mkdocs build --strict
