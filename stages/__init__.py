"""Pipeline stages: fetch, featurize, train, evaluate, report (see dvc.yaml)."""
