# The README's two quick-start commands. Each makes .venv and installs what it needs.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m activelearn

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest

clean:
	rm -rf prepared model evaluation outputs .bentoml rounds mlruns.db
