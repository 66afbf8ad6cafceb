"""DVC stage `fetch-mnist` (dvc.yaml): see :mod:`attention_cnn.data.mnist`."""
from attention_cnn.common import run_main
from attention_cnn.data.mnist import main

if __name__ == "__main__":
    run_main(main)
