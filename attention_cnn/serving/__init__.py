"""Using a trained model outside the pipeline: export it with its featurizer (export) and predict from files."""
