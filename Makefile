# Two commands a user needs: `make repro` and `make test`. Both create .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# GPU=1 (make env GPU=1, make repro GPU=1): TensorFlow's CUDA build of the pinned version, tensorflow[and-cuda],
# instead of tensorflow-cpu; every other pin stays (docs/gpus.md). Its own stamp, so switching reinstalls.
STAMP := $(VENV)/.installed$(if $(GPU),-gpu)
TF_CPU_PIN := $(shell grep '^tensorflow-cpu==' requirements.txt)
TF_GPU_PIN := $(subst tensorflow-cpu,tensorflow[and-cuda],$(TF_CPU_PIN))
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: repro test test-fast bench env gpu-pins lock clean-env push verify-remote exp recipe recipes results

env: $(STAMP)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (tensorflow-io 0.37.1 wheels); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(if $(GPU),$(BIN)/python -m pip uninstall --quiet --yes tensorflow-cpu,\
	   test ! -e $(VENV)/.installed-gpu || $(BIN)/python -m pip uninstall --quiet --yes tensorflow)
	grep -v '^tensorflow-cpu==' requirements.txt > $(VENV)/requirements-rest.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/requirements-rest.txt "$(if $(GPU),$(TF_GPU_PIN),$(TF_CPU_PIN))"
	rm -f $(VENV)/.installed $(VENV)/.installed-gpu
	touch $(STAMP)

# Check without installing that the GPU build resolves together with every other pin (asks PyPI; no download
# of the large wheels where PyPI serves their metadata).
gpu-pins:
	grep -v '^tensorflow-cpu==' requirements.txt > /tmp/requirements-rest.txt
	$(PYTHON) -m pip install --dry-run --ignore-installed --quiet -r /tmp/requirements-rest.txt "$(TF_GPU_PIN)" \
	  && echo "GPU pins resolve: $(TF_GPU_PIN) with requirements.txt"

# Whole pipeline on the embedded default data (offline).
repro: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "error: run inside the git clone (DVC needs git)"; exit 1; }
	$(BIN)/dvc repro
	@echo "report: reports/report.html"

# The whole suite (what CI runs): tests/unit and tests/pipeline (real dvc repro, remotes, browser, distribute),
# one pytest-xdist worker per core, at most 4 (TEST_WORKERS=0 runs them in this process, in order).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# The edit-test loop: unit tests that need no TensorFlow model training (well under a minute).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit -m "not slow"

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
# [QUEUE=1: queue it, then dvc queue start] [FSDD=path/to/free-spoken-digit-dataset-1.0.10.tar.gz: a local archive]
# [FOLD="theo george": only these folds of a recipe with folds, which runs one experiment per fold, queued].
recipe: $(STAMP)
	@test -n "$(NAME)" || { echo "error: name a recipe: make recipe NAME=<name> (make recipes lists them)"; exit 1; }
	$(BIN)/python -m stages.recipe run $(NAME) $(if $(QUEUE),--queue) $(if $(FSDD),--fsdd "$(FSDD)") \
		$(foreach f,$(FOLD),--fold $(f))

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
