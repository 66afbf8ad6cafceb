"""DVC stage `featurize` (dvc.yaml): see :mod:`attention_cnn.features.featurize`."""
from attention_cnn.common import run_main
from attention_cnn.features.featurize import main

if __name__ == "__main__":
    run_main(main)
