"""The results page: finished recipe runs kept in ``results/<recipe>/`` and written into ``docs/results.md``.

:mod:`~attention_cnn.results.experiments` reads DVC's experiment refs from git, :mod:`~attention_cnn.results.collect`
copies each finished recipe's small result files into ``results/``, :mod:`~attention_cnn.results.page` writes
``docs/results.md`` from ``results/`` alone (so a fresh clone regenerates it), :mod:`~attention_cnn.results.speed`
writes the benchmark's table into ``docs/speed.md`` from ``reports/bench.json``.
"""
