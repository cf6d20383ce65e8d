# Entry points: `make demo` (then `make demo-study`) and `make test`. Each creates ./.venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNTIME := $(VENV)/.installed-runtime

.PHONY: setup demo demo-study test test-no-browser test-fast test-shuffled test-rebuild bench gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.py  # uv with pip's configured sources; pip if uv fails
	$(PYTHON) scripts/setup_venv.py $(VENV)
	touch $(STAMP) $(RUNTIME)

$(RUNTIME): pyproject.toml scripts/setup_venv.py  # what the demo needs: the project without the test tools
	$(PYTHON) scripts/setup_venv.py $(VENV) --runtime
	touch $(RUNTIME)

demo: $(RUNTIME)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

demo-study: $(RUNTIME)  # the compression study on the demo's night run (after `make demo`)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo_study.sh

test: $(STAMP)  # one worker per core (pytest-xdist), each module whole on one worker so its fixtures are made once
	scripts/ensure-chromium
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=40

test-no-browser: $(STAMP)
	$(BIN)/python -m pytest -q --deselect tests/serve/test_browser.py

test-rebuild: $(STAMP)  # rebuild the toy models from scratch and rerun every outcome test on them (~21-25 min)
	DE_TEST_REBUILD=1 $(BIN)/python -m pytest -q -s tests/train/test_toy_rebuild.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

test-shuffled: $(STAMP)  # the whole suite in a shuffled order (modules, and tests within each): order-independence
	DE_TEST_SHUFFLE=$${SEED:-1} $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf demo .pytest_cache

gpu-check: $(STAMP)  # on CUDA: the real shapes with random weights (SANA-Video LoRA step, Qwen2-VL captions); else one line
	$(BIN)/python benchmarks/gpu.py
