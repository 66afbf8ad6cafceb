"""Command `predict` (not a DVC stage): see :mod:`attention_cnn.serving.predict`."""
from attention_cnn.common import run_main
from attention_cnn.serving.predict import main

if __name__ == "__main__":
    run_main(main)
