# The README's two quick-start commands. Each makes .venv and installs what it needs.
# `make test` runs ruff, the documentation build (`make docs`) and pytest.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test test-fast lint docs setup clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

setup: $(STAMP)

# The demo: simulated-annotator campaigns on the digits, hybrid (the default strategy)
# against random over seeds, then the comparison table and where to open the sweep's
# MLflow experiment on its learning-curve chart. Bigger: make demo ROUNDS=20 SEEDS=0,1,2,3,4
# continues the campaigns already there and adds the new seeds'; JOBS=2 runs two jobs at
# once (Hydra's joblib launcher; see docs/sweeps.md for when that pays).
ROUNDS ?= 4
SEEDS ?= 0,1,2
STRATEGIES ?= hybrid,random
JOBS ?= 1
SWEEP := multirun/demo
PARALLEL := $(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS),)

demo: $(STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m activelearn -m campaign.rounds=$(ROUNDS) \
		strategy=$(STRATEGIES) seed=$(SEEDS) hydra.sweep.dir=$(SWEEP) $(PARALLEL)
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m activelearn.tracking.report $(SWEEP) --target 0.9 0.95
	@echo "Learning curves: $(SWEEP)/report/learning_curves.png"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The documentation site (mkdocs.yml, docs/) into site/; a broken link or anchor fails it.
# (NO_MKDOCS_2_WARNING: without it the material theme prints its vendor notice every build.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

test: lint docs
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest

# The unit tier alone (tests/unit/: no service, no training), for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

clean:
	rm -rf campaign outputs multirun site
