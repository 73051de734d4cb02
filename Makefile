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
# the core Python modules (config [tool.mutmut] in pyproject.toml) with their own tests only: a
# fixed-seed uniform sample of MUTANTS_SAMPLE mutants (0: all ~9700); both scored by
# scripts/mutants_sample.py against docs/mutants_equivalent.txt. mutmut 3 wants the package under
# src/: the run links src -> python (git-ignored, like mutants/). Inspect with `mutmut show NAME`
# / `mutmut browse` from the root.
MUTANTS_JOBS ?= 2
MUTANTS_SAMPLE ?= 200
MUTANTS_SEED ?= 28
MUTMUT := $(PYTHON) -c "import sys; from mutmut.__main__ import cli; sys.exit(cli())"
mutants: $(STAMPS)/install-diffusers,test,mutation  ## mutation scores (docs/testing.md)
	cargo mutants --version >/dev/null 2>&1 || cargo install --locked cargo-mutants
	nice -n 5 cargo mutants --jobs $(MUTANTS_JOBS) --output .make/mutants-rust || true
	$(PYTHON) scripts/mutants_sample.py rust .make/mutants-rust/mutants.out
	ln -sfn python src
	$(PYTHON) scripts/mutants_sample.py names --size $(MUTANTS_SAMPLE) --seed $(MUTANTS_SEED) \
		> .make/mutants-python.txt
	if [ "$(MUTANTS_SAMPLE)" = 0 ]; then nice -n 5 $(MUTMUT) run --max-children $(MUTANTS_JOBS); \
	else nice -n 5 $(MUTMUT) run --max-children $(MUTANTS_JOBS) $$(cat .make/mutants-python.txt); fi || true
	$(PYTHON) scripts/mutants_sample.py score .make/mutants-python.txt

clean:
	cargo clean
	rm -rf $(STAMPS) glass_out .pytest_cache .benchmarks site

docs: $(STAMPS)/install-docs  ## the documentation site (mkdocs build --strict) into site/
	$(PYTHON) -m mkdocs build --strict
