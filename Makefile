# The commands people type. `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch is installed first, from TORCH_SPEC (and TORCH_INDEX_URL when set), so that the
# package's own `torch>=2.4` installs nothing more. PyPI's Linux wheel of torch==2.13.0 is the
# CUDA build; TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gives the CPU-only one.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
DEMO := runs/demo
DEMO_DATA := data/demo

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
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
