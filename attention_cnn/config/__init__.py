"""The one typed config: ``params.yaml`` read with DVC's YAML 1.2 rules and validated once.

``load_config(path) -> Params`` (:mod:`attention_cnn.config.load`); the sections and their defaults are in
:mod:`attention_cnn.config.params`, the variants' settings in their modules under ``attention_cnn/models/``.
``python -m attention_cnn.config [--params params.yaml]`` checks a file.
"""
from attention_cnn.config.load import PARAMS_FILE, load_config, parse_config, read_yaml
from attention_cnn.config.params import Params

__all__ = ["PARAMS_FILE", "Params", "load_config", "parse_config", "read_yaml"]
