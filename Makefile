# The commands people type. `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch is installed first and pinned here so that pip never pulls a CUDA build by accident;
# on this machine torch==2.13.0 is a local CPU wheel. GPU users: TORCH_SPEC="torch" (or keep
# their own torch: pyproject.toml only asks for torch>=2.2).
TORCH_SPEC ?= torch==2.13.0
DEMO := runs/demo
DEMO_DATA := data/demo

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: install
	rm -rf $(DEMO)
	$(BIN)/python scripts/train.py --config configs/demo.yaml
	$(BIN)/python scripts/translate.py --checkpoint $(DEMO)/checkpoints/best.ckpt \
		--input $(DEMO_DATA)/test.de --output $(DEMO)/test.hyp.en --beam-size 5
	@echo "--- first translations (source | output | reference) ---"
	@paste -d'|' $(DEMO_DATA)/test.de $(DEMO)/test.hyp.en $(DEMO_DATA)/test.en | head -5
	$(BIN)/python scripts/evaluate.py --hyp $(DEMO)/test.hyp.en --ref $(DEMO_DATA)/test.en

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .cache data lightning_logs .pytest_cache
