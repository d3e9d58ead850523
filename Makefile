# The two commands a fresh machine needs: `make test` and `make reproduce-<project>`.
# Both create .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

# make reproduce-<name> [CONFIG=<exp>] [DATA_ROOT=<dir>] [CLUSTER=slurm PARTITION=p NODES=1 GPUS=8 TIME_MIN=1440 ACCOUNT=a] [ARGS="k=v ..."]
CONFIG ?=
DATA_ROOT ?=
CLUSTER ?=
PARTITION ?=
ACCOUNT ?=
NODES ?= 1
GPUS ?= 1
CPUS ?= 10
TIME_MIN ?= 1440
ARGS ?=

.PHONY: setup test reproduce-ezvsl bench-ezvsl clean-venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

cfg = projects/$(1)/configs/$(if $(CONFIG),$(CONFIG),demo).yaml
overrides = $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(ARGS)
slurm = $(PY) -m shared.launch --entry projects.$(1).train --config $(call cfg,$(1)) --cluster slurm \
	--nodes $(NODES) --gpus-per-node $(GPUS) --cpus-per-task $(CPUS) --time-min $(TIME_MIN) \
	$(if $(PARTITION),--partition $(PARTITION)) $(if $(ACCOUNT),--account $(ACCOUNT)) $(overrides)

reproduce-ezvsl: $(STAMP)
ifeq ($(CLUSTER),slurm)
	$(call slurm,ezvsl)
else
	$(PY) -m projects.ezvsl.reproduce --config $(call cfg,ezvsl) $(overrides)
endif

bench-ezvsl: $(STAMP)
	$(PY) -m projects.ezvsl.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
