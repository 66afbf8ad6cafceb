"""DVC stage `fetch-speech` (dvc.yaml): see :mod:`attention_cnn.data.speech`."""
from attention_cnn.common import run_main
from attention_cnn.data.speech import main

if __name__ == "__main__":
    run_main(main)
