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

.PHONY: setup test reproduce-ezvsl bench-ezvsl reproduce-accel_ssl bench-accel_ssl reproduce-ptnl bench-ptnl clean-venv

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

# accel_ssl: no CONFIG = the Fashion-MNIST demo (3 frameworks, full vs accelerated);
# CONFIG=mocov3_vitb16_in1k runs that config and its _accel twin and prints the comparison.
reproduce-accel_ssl: $(STAMP)
ifeq ($(CLUSTER),slurm)
	$(call slurm,accel_ssl)
else ifeq ($(CONFIG),)
	$(PY) -m projects.accel_ssl.reproduce $(overrides)
else
	$(PY) -m projects.accel_ssl.reproduce --config projects/accel_ssl/configs/$(CONFIG).yaml \
		--accel-config projects/accel_ssl/configs/$(CONFIG)_accel.yaml $(overrides)
endif

bench-accel_ssl: $(STAMP)
	$(PY) -m projects.accel_ssl.bench $(ARGS)

reproduce-ptnl: $(STAMP)
ifeq ($(CLUSTER),slurm)
	$(call slurm,ptnl)
else ifeq ($(CONFIG),)
	$(PY) -m projects.ptnl.reproduce $(overrides)
else
	$(PY) -m projects.ptnl.train --config projects/ptnl/configs/$(CONFIG).yaml $(overrides)
endif

bench-ptnl: $(STAMP)
	$(PY) -m projects.ptnl.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
