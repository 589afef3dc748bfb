# hihpq: every target creates .venv and installs the project into it when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Not executed by make test, each with its reason in tests/test_notebooks.py (SKIP).
NB_SKIP :=
NB_SRC := $(filter-out $(NB_SKIP),$(wildcard notebooks/[0-9][0-9]_*.py))
NB_OUT := build/notebooks
# The development copy of CIFAR-10 beside the checkout (tests, CI); otherwise torchvision downloads it.
SHARED_CIFAR10 := $(abspath $(wildcard ../shared/data/cifar10-jpeg.tar.gz))
export HIHPQ_CIFAR10 ?= $(SHARED_CIFAR10)
# The development copy of the Tiny-ImageNet subset: tests/test_notebooks.py runs notebook 08 on it.
SHARED_TINY_IMAGENET := $(abspath $(wildcard ../shared/data/tiny-imagenet-200-subset.tar.gz))
export HIHPQ_TINY_IMAGENET_ARCHIVE ?= $(SHARED_TINY_IMAGENET)

.PHONY: demo test lint format typecheck lab book bench bench-folder notebooks clean-notebooks help

help:
	@echo "make demo            - the main job: train and evaluate HiHPQ on CIFAR-10 (CPU profile)"
	@echo "make test            - lint + typecheck + the whole test suite with coverage + every notebook in fast mode"
	@echo "make lint            - ruff check and format check"
	@echo "make format          - ruff fix and format"
	@echo "make typecheck       - mypy on the core (geometry, quantization, losses, hierarchy)"
	@echo "make notebooks       - convert notebooks/*.py to executable .ipynb in $(NB_OUT)"
	@echo "make lab             - JupyterLab on notebooks/ with the project's kernel"
	@echo "make book            - the executed series as a static site, build/book/index.html (offline)"
	@echo "make bench           - benchmarks, results in benchmarks/results/"
	@echo "make bench-folder    - the image-folder benchmark (Tiny-ImageNet subset, 3 seeds)"
	@echo "make clean-notebooks - remove $(NB_OUT)"
	@echo "make help            - this list"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hihpq demo

lint: $(STAMP)
	$(BIN)/ruff check conftest.py hihpq_lib tests notebooks benchmarks book
	$(BIN)/ruff format --check conftest.py hihpq_lib tests notebooks benchmarks book

# The core's types (pyproject.toml [tool.mypy] lists the files and the two modules ignored).
typecheck: $(STAMP)
	$(BIN)/python -m mypy

format: $(STAMP)
	$(BIN)/ruff check --fix conftest.py hihpq_lib tests notebooks benchmarks book
	$(BIN)/ruff format conftest.py hihpq_lib tests notebooks benchmarks book

# py:percent sources -> executable .ipynb (outputs are never committed)
notebooks: $(STAMP)
	rm -rf $(NB_OUT) && mkdir -p $(NB_OUT)
	for nb in $(NB_SRC); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(NB_OUT)/$$(basename $${nb%.py}).ipynb $$nb || exit 1; \
	done

# The notebooks are executed with their outputs kept (--overwrite), then the browser test
# (tests/test_browser.py: JupyterLab and the book in Chromium) converts those outputs.
# Coverage of hihpq_lib by the tests and doctests: a table in the terminal, build/coverage/ as HTML.
test: lint typecheck notebooks
	HIHPQ_FAST=1 MPLBACKEND=Agg $(BIN)/python -m pytest tests hihpq_lib $(NB_OUT) -m "not browser" \
	  --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 --overwrite -p no:cacheprovider \
	  --cov=hihpq_lib --cov-report=term:skip-covered --cov-report=html:build/coverage
	HIHPQ_FAST=1 $(BIN)/python -m pytest tests/test_browser.py -m browser -p no:cacheprovider

# The .py sources open directly as notebooks (.jupyter/labconfig makes jupytext's notebook
# view the default for them): nothing is paired or rewritten, git status stays clean.
lab: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name hihpq --display-name "Python (hihpq)"
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter $(BIN)/jupyter lab notebooks/

# The executed series as a static site (full mode when make demo's features are cached,
# fast mode otherwise); open build/book/index.html, or serve build/book.
book: $(STAMP)
	$(BIN)/python -m book.build --out build/book

# The committed tables, all with the one CPU profile of make demo (EfficientNet-Lite2 at
# 160 px, 8-view bank, 20 epochs; protocol I: 4-view bank, 8 epochs over its 50,000 training
# images): protocol II at 16, 32 and 64 bits with 3 seeds each (about 45 minutes from an
# empty cache); protocol I at 16 and 32 bits with 3 seeds, every method in one run (the
# profiles' instance weight and neighbour term, README "Eleventh round"); protocol I at 64
# bits with 3 seeds, HiHPQ beside its Euclidean twin and the untrained baselines, then the
# two ablations (the committed protocol_i_16_64*/ files also hold I · 16 rows from before the
# 16-bit profile took those two settings: protocol_i_16_32/ supersedes them); then the float32 stress test, the hierarchy memory study and the ADC sweep (top 10 / 100 /
# 1000 × N × threads vs faiss IndexPQ, and PQIndex.to_faiss() at 1M and 10M codes).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --protocols II --bits 32 64 --seeds 3 \
	  --seed-cells II:32 II:64 --threads 2 --quiet --out benchmarks/results/protocol_ii
	$(BIN)/python -m benchmarks.run_all --protocols II --bits 16 --seeds 3 \
	  --seed-cells II:16 --threads 2 --quiet --out benchmarks/results/protocol_ii_16
	$(BIN)/python -m benchmarks.run_all --protocols I --bits 16 32 --epochs 8 --seeds 3 \
	  --seed-cells I:16 I:32 --threads 2 --quiet --out benchmarks/results/protocol_i_16_32
	$(BIN)/python -m benchmarks.run_all --protocols I --bits 64 --epochs 8 --seeds 3 \
	  --seed-cells I:64 --methods float faiss_pq faiss_opq euclidean_hier hihpq \
	  --threads 2 --quiet --out benchmarks/results/protocol_i_16_64
	$(BIN)/python -m benchmarks.run_all --protocols I --bits 64 --epochs 8 --seeds 3 \
	  --seed-cells I:64 --methods hihpq_no_hier euclidean_cpq \
	  --threads 2 --quiet --out benchmarks/results/protocol_i_16_64_ablations
	$(BIN)/python -m benchmarks.float32_stress
	$(BIN)/python -m benchmarks.hierarchy_memory
	$(BIN)/python -m benchmarks.adc_throughput --n 50000 500000 --m 4 --topk 10 100 1000 \
	  --threads 1 2 --repeats 3 --to-faiss-n 1000000 10000000 --to-faiss-queries 100 \
	  --json benchmarks/results/adc_throughput.json --md benchmarks/results/adc_throughput.md
	$(MAKE) bench-folder

# The image-folder table: the Tiny-ImageNet subset (200 classes, 20,000 database/training
# images, its 10,000 official validation images as queries, WordNet levels), 32 bits, the
# folder default (recipe: auto, what `hihpq train --data FOLDER` runs) with 3 seeds beside
# the untrained baselines and each candidate trained to the end (docs/folders.md; about
# 30 minutes from an empty cache). The fixed folder profile's earlier table came from
# `python -m benchmarks.folder_bench` (benchmarks/results/folders/tiny_imagenet).
TIN := build/tiny-imagenet/tiny-imagenet-200-subset
bench-folder: $(STAMP)
	@test -n "$(HIHPQ_TINY_IMAGENET_ARCHIVE)" || { echo "bench-folder: set HIHPQ_TINY_IMAGENET_ARCHIVE=path/to/tiny-imagenet-200-subset.tar.gz"; exit 2; }
	mkdir -p build/tiny-imagenet && tar -xzf $(HIHPQ_TINY_IMAGENET_ARCHIVE) -C build/tiny-imagenet
	$(BIN)/python -m benchmarks.recipe_study --data $(TIN)/train --query-data $(TIN)/val \
	  --hierarchy $(TIN)/wordnet_hierarchy.json --seeds 3 \
	  --label "Tiny-ImageNet subset (all of it: 20,000 / 10,000)" \
	  --out benchmarks/results/folders/recipe_tiny_imagenet_full

clean-notebooks:
	rm -rf $(NB_OUT)
