"""Pipeline stages: fetch, featurize, train, evaluate, report (see dvc.yaml).

Every stage runs as ``python -m stages.<name>``, so this file runs first in each stage process.
"""
import sys

# `import keras` imports scikit-learn (installed for mlxtend) only to define its sklearn wrappers, which no stage
# uses, and every stage process pays for that import (docs/design.md, "Tests"). A stage process is ours alone, so
# mark the module absent there: Keras catches the ImportError and skips the wrappers. Nothing a stage computes
# changes; tests/unit/test_dvc_deps.py keeps this file to exactly this marker and checks Keras works without it.
sys.modules.setdefault("sklearn", None)
