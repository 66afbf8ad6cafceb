"""TensorFlow process set-up shared by the stages that run models.

Import this module and call :func:`configure_tensorflow` *before* TensorFlow is
imported anywhere: the oneDNN switch is read when TensorFlow loads. On this
project's 2-core CPUs oneDNN made the seed speech ``cnn`` train 1.3x-3x faster
per layer (measured, see README), so it is switched on unless the user set it.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

from attention_cnn.common import StageError


def configure_tensorflow(seed: int | None = None, deterministic: bool = True) -> None:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide C++ info logs; errors still show
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow seeds
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_multi_worker(name: str) -> None:
    """Reject ``train.strategy: multi_worker`` without a valid ``TF_CONFIG``, before any work.

    Needs no TensorFlow, so the train stage calls it first and fails in a second, not after loading data.
    (The config has already checked that ``name`` is a strategy.)
    """
    if name == "multi_worker":
        tf_config()  # a malformed TF_CONFIG is one line too
        if not os.environ.get("TF_CONFIG"):
            raise StageError("train.strategy=multi_worker needs the TF_CONFIG environment variable on every worker "
                             "(cluster and task; see README 'GPUs and several machines')")


def select_strategy(name: str = "auto") -> Any:
    """The ``tf.distribute`` strategy for ``train.strategy``.

    ``auto``: MirroredStrategy over all GPUs when there are several, else the default strategy (no
    distribution: one CPU, or one GPU). ``mirrored`` forces MirroredStrategy over all visible devices
    (the GPUs, or else the CPU's logical devices). ``multi_worker``: MultiWorkerMirroredStrategy
    configured by ``TF_CONFIG``; create it before any other TensorFlow work (collective ops are
    configured at program start). ``default`` never distributes.
    """
    check_multi_worker(name)
    import tensorflow as tf

    if name == "multi_worker":  # must come before anything that initializes the TensorFlow runtime
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def for_replicas(ds: Any) -> Any:
    """A ``tf.data`` pipeline ready for several replicas: shard by data, not by file.

    Every worker then runs the same number of steps (file sharding would give a worker with fewer
    shard files fewer batches, and the collective all-reduce would wait for it forever).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def keras_distribution_fixes(model: Any, strategy: Any, train_ds: Any) -> None:
    """Make Keras 3.8's ``model.fit`` behave under MirroredStrategy and MultiWorkerMirroredStrategy.

    With a strategy, Keras pulls one batch from the training data before the first epoch just to
    learn its shapes: the shuffled order then starts one reshuffle later than on one device, and under
    MultiWorkerMirroredStrategy the all-reduce of that batch fails outright (keras-team/keras#20585,
    open). Here the model, metrics and optimizer are built from the data's element spec instead, so
    no batch is consumed. Under MultiWorkerMirroredStrategy with several workers, Keras also averages
    the scalar logs of every step with ``axis=0``, which fails; they are averaged as scalars.
    A no-op for the default strategy.
    """
    import tensorflow as tf

    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return  # the default strategy: Keras builds lazily and consumes nothing
    with strategy.scope():
        model._symbolic_build(data_batch=train_ds.element_spec)
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not getattr(tf_trainer.reduce_per_replica, "_multi_worker_fixed", False):
        original = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
                return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
            return original(values, strategy, reduction)

        reduce_per_replica._multi_worker_fixed = True
        tf_trainer.reduce_per_replica = reduce_per_replica


def tf_config() -> dict[str, Any]:
    """``TF_CONFIG`` parsed (``{}`` when unset or empty); a malformed value is a one-line :class:`StageError`."""
    import json

    from attention_cnn.common import StageError

    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise StageError(f"TF_CONFIG is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task", {}), dict) \
            or not isinstance(cfg.get("cluster", {}), dict):
        raise StageError('TF_CONFIG must be a JSON object like {"cluster": {"worker": [...]}, '
                         '"task": {"type": "worker", "index": 0}}')
    return cfg


def is_chief() -> bool:
    """Whether this process is the chief of a multi-worker run: the one that logs (dvclive) and saves.

    True without ``TF_CONFIG`` or without a task in it (a single machine), for the task of type
    ``chief``, and for worker 0 when the cluster has no ``chief`` job (TensorFlow's own rule).
    False for every other worker, and for ``evaluator`` and ``ps`` tasks.
    """
    task = tf_config().get("task") or {}
    if not task:
        return True
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in (tf_config().get("cluster") or {})


def task_name() -> str:
    """``worker-1`` style name of this process's TF_CONFIG task (``chief`` when there is none)."""
    task = tf_config().get("task") or {}
    return f"{task.get('type')}-{int(task.get('index', 0) or 0)}" if task else "chief"


# The CPU features that change what TensorFlow computes here: oneDNN's kernels (on by default only with
# AVX-512) round differently from Eigen's, and `auto` precision picks bfloat16 only with AVX512-BF16 or AMX.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name and whether it has each of :data:`CPU_FLAGS`, from ``/proc/cpuinfo``'s text.

    ``cpuinfo``: that text (read when not given; no such file: no flags). Needs no TensorFlow.
    """
    text = cpuinfo
    if text is None:
        try:
            text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
        except OSError:
            text = ""
    lines = text.splitlines()
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return {"cpu": model, **{flag: flag in flags for flag in CPU_FLAGS}}


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so oneDNN runs it fast."""
    features = cpu_features(cpuinfo)
    return features["avx512_bf16"] or features["amx_bf16"]


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN's kernels (fixed when TensorFlow was imported)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def machine() -> dict[str, Any]:
    """What a result depends on beyond params, code and data: CPU flags, oneDNN on or off, GPUs."""
    import tensorflow as tf

    return {**cpu_features(), "onednn": onednn_enabled(),
            "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                     for g in tf.config.list_physical_devices("GPU")]}


def set_precision(name: str, cpuinfo: str | None = None) -> str:
    """Set Keras' global dtype policy before a model is built; return the precision chosen.

    ``float32``: as the study. ``bfloat16``: Keras' ``mixed_bfloat16`` (variables stay float32, layers
    compute in bfloat16). ``auto``: bfloat16 where the hardware runs it natively (a GPU of compute
    capability 8 or more, or a CPU with AVX512-BF16/AMX), else float32. ``cpuinfo``: the CPU's
    ``/proc/cpuinfo`` text, to decide as on another CPU (tests); read from this machine when not given.
    """
    import keras

    chosen = name
    if name == "auto":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        capable = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) >= (8, 0)
                   for g in gpus]
        chosen = "bfloat16" if (all(capable) if gpus else cpu_has_bf16(cpuinfo)) else "float32"
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if chosen == "bfloat16" else "float32")
    return chosen


def versions() -> dict[str, str]:
    """Versions recorded next to every model, for reproducibility."""
    import keras
    import numpy
    import tensorflow as tf

    return {"python": sys.version.split()[0], "platform": platform.platform(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__}
