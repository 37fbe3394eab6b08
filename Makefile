# Two commands (README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CORES ?= 2

.PHONY: demo test setup data dry-run lint clean-results

demo: setup data
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml --workflow-profile workflow/profiles/default

# Whole test files spread over one worker per core (pytest-xdist; docs/testing.md): the Slurm runs, the
# documented commands and the workflow's runs wait on jobs much of the time.
test: setup data
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST (the embedded demo data): Debian's dataset-fashion-mnist package.
data:
	@if [ -e $(FMNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is not in /usr/share/datasets/fashion-mnist. Install it with"; \
	  echo "  sudo apt-get install dataset-fashion-mnist"; \
	  echo "or set datasets.fashion_mnist.root (idx .gz files) or datasets.fashion_mnist.download: true in config/demo.yaml."; \
	fi

dry-run: setup
	$(BIN)/snakemake -n --cores $(CORES) --configfile config/demo.yaml

# `make test` runs the same (tests/test_workflow.py::test_snakemake_lint_is_clean);
# snakemake --lint exits 1 when it has findings.
lint: setup
	$(BIN)/snakemake --lint --configfile config/demo.yaml
	$(BIN)/snakemake --lint --configfile config/test.yaml

clean-results:
	rm -rf results reports/demo.md reports/demo reports/demo.parquet reports/demo.findings.parquet
