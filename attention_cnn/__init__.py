"""The library behind the DVC stages in stages/: data sources, features, models, training, evaluation, report."""
