# The two commands of the README. Both create .venv when missing and install the project into it.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip prints a warning per package for this machine's unused local index folders; hide only those lines
# (grep finding nothing to print is fine; a pip failure still fails the pipeline through pipefail).
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install demo test clean

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the project and its dependencies into $(VENV) (first time: a few minutes)..."
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(PIP_FILTER)
	$(PY) -m pip install -q -e ".[test]" 2>&1 | $(PIP_FILTER)
	@# Detectron2 (Python code only, no compiled ops) when the venv has none; see the script's docstring.
	@$(PY) -c "import detectron2" 2>/dev/null || $(PY) dev/install_detectron2.py
	$(PY) -c "import torch, torchvision, timm, yacs, sklearn"
	$(PY) -W ignore::FutureWarning -c "from transfer import d2compat; p = d2compat.apply(); import detectron2.model_zoo, detectron2.modeling; \
	print('detectron2 OK; compatibility patches:', ', '.join(p) or 'none')"
	@touch $(STAMP)

install: $(STAMP)

# The whole pipeline on embedded data (digits pretraining -> evaluation -> Detectron2 on synthetic COCO).
demo: install
	$(PY) tools/demo.py

# Lint (ruff, configured in pyproject.toml; seconds), then run the test suite; pytest's exit code 5
# (no test collected) counts as a failure.
test: install
	$(VENV)/bin/ruff check .
	@rc=0; $(PY) -m pytest -q tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf output .pytest_cache
