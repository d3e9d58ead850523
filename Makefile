# The commands a fresh machine needs: `make test` and `make reproduce-<project>`.
# Every target creates .venv from requirements.txt on first use.
#
# One contract for every project folder projects/<p>/ (pattern rules: a new project needs no edit here):
#   make reproduce-<p> [CONFIG=<name>] [DATA_ROOT=<dir>] [ARGS="k=v --flag ..."]
#       python -m projects.<p>.reproduce [--config projects/<p>/configs/<name>.yaml] [data.root=<dir>] ARGS
#       no CONFIG: the project's demo (reproduce.py's default).
#   make reproduce-<p> CONFIG=<name> CLUSTER=slurm [PARTITION=p ACCOUNT=a NODES=1 GPUS=8 CPUS=10 TIME_MIN=1440]
#       submits projects.<p>.train with that config through shared.launch (submitit; requeued on preemption).
#       CLUSTER=local runs the same job as local subprocesses (a dry run of the submission).
#   make bench-<p> [ARGS="--batch 64 ..."]      python -m projects.<p>.bench ARGS
#   make bench [BUDGET_S=30] [ARGS="--projects a,b"]   every projects/<p>/bench.py -> results/bench/<device>.json
#   make test-<p> [ARGS=...]                     pytest tests/<p>
#   make test | test-fast | lint | report
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

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

# Per-project exceptions to the contract (keep this list short).
# ptnl: reproduce.py runs the demo grid; a CONFIG is one training run of projects.ptnl.train.
CONFIG_ENTRY_ptnl = projects.ptnl.train
# latent_mim, minred: reproduce.py compares methods/buffers on the demo; a CONFIG is one pretraining run.
CONFIG_ENTRY_latent_mim = projects.latent_mim.train
CONFIG_ENTRY_minred = projects.minred.train
# accel_ssl: a CONFIG runs that config and its _accel twin and prints the time-to-accuracy comparison.
CONFIG_ARGS_accel_ssl = $(if $(wildcard projects/accel_ssl/configs/$(CONFIG)_accel.yaml),\
	--accel-config projects/accel_ssl/configs/$(CONFIG)_accel.yaml)
SLURM_TWINS_accel_ssl = $(if $(wildcard projects/accel_ssl/configs/$(CONFIG)_accel.yaml),$(CONFIG)_accel)

cfg = projects/$(1)/configs/$(2).yaml
overrides = $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) $(ARGS)
entry = $(or $(if $(CONFIG),$(CONFIG_ENTRY_$(1))),projects.$(1).reproduce)
submit = $(PY) -m shared.launch --entry projects.$(1).train --config $(call cfg,$(1),$(2)) --cluster $(CLUSTER) \
	--nodes $(NODES) --gpus-per-node $(GPUS) --cpus-per-task $(CPUS) --time-min $(TIME_MIN) \
	$(if $(PARTITION),--partition $(PARTITION)) $(if $(ACCOUNT),--account $(ACCOUNT)) $(overrides)
# pytest's exit 5 ("no tests collected", e.g. a new project's empty folder or all tests deselected) is not a failure.
pytest = $(PY) -m pytest $(1); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected ($(1))"; exit 0; fi; exit $$rc
# test-fast leaves out the end-to-end demo runs (e2e), the heavy integration tests (slow) and the
# multi-process ones (dist); the markers are registered in pyproject.toml. `make test` runs them all.
FAST := -m 'not e2e and not slow and not dist'

.PHONY: setup test test-fast test-claims lint report lock bench clean-venv
.SECONDARY:

# the Debian data packages the demos and tests read (shared/data/debian_packages.py: installed with
# apt-get where it can, as root or through password-less sudo; otherwise it prints the install line
# and the tests that need them skip)
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) shared/data/debian_packages.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $@

# requirements.lock: every package of the environment at its resolved version (CI writes it; commit it
# when it changes, so a run can be repeated with `pip install -r requirements.lock`)
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sort > requirements.lock

setup: $(STAMP)
	@$(PYTHON) shared/data/debian_packages.py

test: $(STAMP)
	@$(call pytest,)

test-fast: $(STAMP)
	@$(call pytest,$(FAST) $(ARGS))

# the demos' learning claims at reduced sizes (tests marked demo_claim; minutes each): not part of `make test`
test-claims: $(STAMP)
	@$(call pytest,--claims -m demo_claim $(ARGS))

test-%: $(STAMP)
	@test -d tests/$* || { echo "no test folder tests/$* (there are: $(filter-out __init__.py,$(notdir $(wildcard tests/*))))"; exit 2; }
	@$(call pytest,tests/$* $(ARGS))

# ruff's checks, and code repeated across projects (tools/check_duplicates.py: 6+ identical lines belong in shared/)
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tools/check_duplicates.py

report: $(STAMP)
	$(PY) -m shared.report

reproduce-%: $(STAMP)
	@test -f projects/$*/reproduce.py || { echo "projects/$*/reproduce.py not found"; exit 2; }
	@test -z "$(CONFIG)" -o -f $(call cfg,$*,$(CONFIG)) || { echo "no config $(call cfg,$*,$(CONFIG)); there are:"; \
		ls projects/$*/configs/ | sed -n 's/\.yaml$$//p'; exit 2; }
ifneq ($(filter-out none,$(CLUSTER)),)
	@test -n "$(CONFIG)" || { echo "CLUSTER=$(CLUSTER) submits one training config: give CONFIG=<name>"; exit 2; }
	$(foreach c,$(CONFIG) $(SLURM_TWINS_$*),$(call submit,$*,$(c)) &&) true
else
	$(PY) -m $(call entry,$*) $(if $(CONFIG),--config $(call cfg,$*,$(CONFIG)) $(CONFIG_ARGS_$*)) $(overrides)
endif

# every bench.py in its own process within BUDGET_S seconds (hard limit 3 x BUDGET_S + 60 s), one JSON per device
BUDGET_S ?= 30
bench: $(STAMP)
	$(PY) -m shared.bench_suite --budget-s $(BUDGET_S) $(ARGS)

bench-%: $(STAMP)
	@test -f projects/$*/bench.py || { echo "projects/$*/bench.py not found"; exit 2; }
	$(PY) -m projects.$*.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
