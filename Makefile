# Targets behind the two README commands. Each installs what it needs, so both work on a fresh machine;
# an install is re-run only when pyproject.toml or the Rust sources change (stamps in .make/).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMPS := .make
RUST_SOURCES := Cargo.toml Cargo.lock $(wildcard rust/*.rs rust/*/*.rs)

.PHONY: demo test test-fast test-rust test-python lint bench docs mutants clean

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

# Mutation testing, a periodic check (not part of .ci/run; hours on 2 cores: see docs/testing.md).
# cargo-mutants over rust/ (config .cargo/mutants.toml) with `cargo test` alone, then mutmut over
# the core Python modules (config [tool.mutmut] in pyproject.toml) with their own tests only.
MUTANTS_JOBS ?= 1
mutants: $(STAMPS)/install-diffusers,test,mutation  ## mutation scores (docs/testing.md)
	cargo mutants --version >/dev/null 2>&1 || cargo install --locked cargo-mutants
	nice -n 5 cargo mutants --jobs $(MUTANTS_JOBS) --timeout 300 --output .make/mutants-rust || true
	cd python && nice -n 5 $(PYTHON) -m mutmut run || true
	@echo "rust: .make/mutants-rust/mutants.out/{caught,missed,timeout,unviable}.txt; python: mutmut results"

clean:
	cargo clean
	rm -rf $(STAMPS) glass_out .pytest_cache .benchmarks site

docs: $(STAMPS)/install-docs  ## the documentation site (mkdocs build --strict) into site/
	$(PYTHON) -m mkdocs build --strict
