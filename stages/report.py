"""DVC stage `report` (dvc.yaml): see :mod:`attention_cnn.report.report`."""
from attention_cnn.common import run_main
from attention_cnn.report.report import main

if __name__ == "__main__":
    run_main(main)
