"""DVC stage `train` (dvc.yaml): see :mod:`attention_cnn.training.train`."""
from attention_cnn.common import run_main
from attention_cnn.training.train import main

if __name__ == "__main__":
    run_main(main)
