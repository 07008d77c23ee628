# learning-not-to-learn: `make run_cmnist` (set up + reference recipe), `make test` (set up + tests),
# `make test_repro` (the paper-reproduction tests)
VENV      ?= .venv
PY        := $(VENV)/bin/python
SIGMA2    ?= 0.020
DATA_ROOT ?= ./data
LOGDIR    ?= outputs

.PHONY: setup setup_dev fetch_data run_cmnist long_runs long_runs_status table_cmnist table_methods test test_repro test_fast \
        tensorboard clean \
        run_dogs_cats_tb1 run_dogs_cats_tb2 run_imdb_eb1_gen run_imdb_eb2_gen run_imdb_eb1_age \
        run_imdb_eb2_age

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# test-only tools (pytest) on top of setup
setup_dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# MNIST_FROM=DIR imports the idx files from a folder instead of downloading them.
fetch_data: setup
	$(if $(MNIST_FROM),$(PY) fetch_data.py mnist --from $(MNIST_FROM) --data_root_base $(DATA_ROOT),$(PY) fetch_data.py mnist --data_root_base $(DATA_ROOT))

# EPOCHS=N shortens both stages (default 100 each).
run_cmnist: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_cmnist.sh $(SIGMA2)

# The headline runs (baseline + LNL at 100 + 100 epochs, sigma^2 0.020 then 0.050, ...) within
# BUDGET, at low priority; finished records in results/cmnist/. PLAN=lff: LfF's benchmark
# (results/lff_cmnist/); PLAN=compare: every method as its authors run it, chosen on
# validation (results/compare/). KEEP=auto (the default here) carries unfinished runs' resume
# points in results/in_progress/ through git (short_lived/keep.py; commit them with the
# records) so a fresh clone continues them; KEEP= leaves them in outputs/ on this machine.
BUDGET ?= 1h
PLAN ?= headline
KEEP ?= auto
long_runs: setup
	$(PY) short_lived/long_runs.py run --plan $(PLAN) --budget $(BUDGET) --low_priority $(if $(KEEP),--keep $(KEEP)) $(if $(MNIST_FROM),--mnist_from $(MNIST_FROM))

long_runs_status: setup
	$(PY) short_lived/long_runs.py status --plan $(PLAN) $(if $(KEEP),--keep $(KEEP))

# the Colored-MNIST sweep -> outputs/cmnist_table/{results.csv,results.md,accuracy_vs_var.png}
table_cmnist: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_cmnist_table.sh

# every method on its benchmark -> outputs/methods_table/results.md (see the script for sizes)
table_methods: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_methods_table.sh

# Real-image benchmarks (baseline, then LNL): data from `python fetch_data.py dogs_cats` /
# `imdb_face` (see README). EPOCHS, IMAGE_SIZE, BATCH, PRETRAINED=1 pass through.
run_dogs_cats_tb1 run_dogs_cats_tb2: run_dogs_cats_%: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_dogs_cats_$*.sh

run_imdb_eb1_gen run_imdb_eb2_gen: run_imdb_%_gen: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_imdb_$*_gender.sh

run_imdb_eb1_age run_imdb_eb2_age: run_imdb_%_age: setup
	PYTHON=$(PY) DATA_ROOT=$(DATA_ROOT) bash scripts/run_imdb_$*_age.sh

# pytest exits 5 when a lane collects no tests: said in words, and still a failure (a lane
# that lost its tests proves nothing)
PYTEST = $(PY) -m pytest -q --durations=25
NO_TESTS = || { rc=$$?; [ $$rc -ne 5 ] || echo "no tests collected for this lane" >&2; exit $$rc; }

# everything except the paper-reproduction runs (the newcomer's lane, a few minutes on 2 cores).
# TEST_WORKERS pytest processes (pytest-xdist), one thread each: while one waits on a run it
# started or on Python, the other computes (2 on 2 cores: 8 min against 12 in one process)
TEST_WORKERS ?= 2
test: setup_dev
	$(PYTEST) -m "not slow" -n $(TEST_WORKERS) tests $(NO_TESTS)

# the paper-reproduction runs (-m slow): one full IRM restart, IRM and ERM (7-15 minutes on 2 cores)
test_repro: setup_dev
	$(PYTEST) -m slow tests $(NO_TESTS)

# kept for old habits: the same as `make test`
test_fast: test

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
