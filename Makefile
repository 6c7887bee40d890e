# geoseg: the two set-up commands are `make demo` and `make test`.
# Each creates or updates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geoseg-installed
# On these machines the torch/torchvision pair below is served from local disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,dev,notebooks]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_OUT)

test: $(STAMP)
	bash scripts/install_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks
	$(BIN)/ruff format --check geoseg tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
