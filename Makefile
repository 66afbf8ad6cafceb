# Two commands a user needs: `make repro` and `make test`. Both create .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: repro test bench env lock clean-env push verify-remote exp recipe recipes results

env: $(STAMP)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (tensorflow-io 0.37.1 wheels); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Whole pipeline on the embedded default data (offline).
repro: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "error: run inside the git clone (DVC needs git)"; exit 1; }
	$(BIN)/dvc repro
	@echo "report: reports/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Share results: dvc push, then prove every object dvc.lock and the .dvc files reference is in the remote
# with the right md5, and repair what is not (docs/team.md). REMOTE=name picks a remote other than the default.
push: $(STAMP)
	$(BIN)/python -m attention_cnn.team.remote push --run-cache $(if $(REMOTE),-r $(REMOTE))

verify-remote: $(STAMP)
	$(BIN)/python -m attention_cnn.team.remote verify $(if $(REMOTE),-r $(REMOTE))

# One experiment in the workspace, refused before params.yaml is touched while another runs (docs/team.md):
# make exp ARGS='-S train.epochs=5'. Several at once: dvc exp run --queue ...; dvc queue start.
exp: $(STAMP)
	$(BIN)/python -m attention_cnn.team.exp run $(ARGS)

# A named recipe (recipes/<NAME>.yaml, docs/results.md) as the DVC experiment <NAME>: make recipe NAME=strong-mnist
# [QUEUE=1: queue it, then dvc queue start] [FSDD=path/to/free-spoken-digit-dataset-1.0.10.tar.gz: a local archive].
recipe: $(STAMP)
	@test -n "$(NAME)" || { echo "error: name a recipe: make recipe NAME=<name> (make recipes lists them)"; exit 1; }
	$(BIN)/python -m stages.recipe run $(NAME) $(if $(QUEUE),--queue) $(if $(FSDD),--fsdd "$(FSDD)")

recipes: $(STAMP)
	@$(BIN)/python -m stages.recipe list

# Finished recipe runs -> results/<recipe>/ (kept in git) -> docs/results.md; reports/bench.json -> docs/speed.md.
results: $(STAMP)
	$(BIN)/python -m stages.results

bench: $(STAMP)
	$(BIN)/python -m bench.run

lock: $(STAMP)
	{ echo "# Exact pins of every package (pip freeze of a working environment, Python 3.11, CPU)."; \
	  echo "# Regenerate with: make lock"; $(BIN)/python -m pip freeze --exclude-editable | sort -f; } > requirements.txt

clean-env:
	rm -rf $(VENV)
