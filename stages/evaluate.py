"""DVC stage `evaluate` (dvc.yaml): see :mod:`attention_cnn.evaluation.evaluate`."""
from attention_cnn.common import run_main
from attention_cnn.evaluation.evaluate import main

if __name__ == "__main__":
    run_main(main)
