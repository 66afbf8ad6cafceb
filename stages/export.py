"""DVC stage `export`: see :mod:`attention_cnn.serving.export`."""
from attention_cnn.common import run_main
from attention_cnn.serving.export import main

if __name__ == "__main__":
    run_main(main)
