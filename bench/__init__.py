"""Benchmarks for issue #4 ("fast and scalable"): ``python -m bench.run [--quick]`` (``make bench``).

Every figure is a ratio of two things measured in the same run; each measurement runs in its
own Python process (:mod:`bench.workers`), so TensorFlow settings read at import time
(``TF_ENABLE_ONEDNN_OPTS``) and peak memory belong to one side only.
"""
