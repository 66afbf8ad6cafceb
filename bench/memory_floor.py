"""The bytes one training step must move, and the machine's copy bandwidth: ``cnn_step_vs_memory_floor``.

The model of the bytes (:func:`step_bytes`, counted from a built Keras model's layers and weights):

- every trainable weight: 10 accesses of 4 bytes (weights and Adam's moments stay float32): read forward,
  read backward (the gradient of the layer's input), gradient written; Adam reads weight, gradient and its
  two moments and writes weight and both moments. Non-trainable weights: read once forward.
- every layer's tensors, ``B`` examples at ``bytes_per_value`` each: forward, its inputs read and its output
  written; backward, the output's gradient read and the inputs' gradient written (none for the model's own
  input), and a layer with trainable weights reads its inputs again (their weights' gradient needs them).
- layers that only re-view a tensor (Input, Flatten, Reshape) move nothing.

A floor, not an estimate: each tensor crosses memory the fewest times the step's arithmetic allows and caches
hold nothing between passes. It leaves out what a real step adds (an activation's derivative reading the saved
output, the dropout mask, the loss, metrics) and what fusing could save (a fused convolution and activation
still writes its output once).
"""
from __future__ import annotations

import os
import threading
import time
from math import prod
from typing import Any

import numpy as np

WEIGHT_ACCESSES = 10  # forward read, backward read, gradient write, Adam reads w, g, m, v and writes w, m, v
WEIGHT_BYTES = 4      # float32 weights and optimizer moments (also under mixed precision)
VIEW_LAYERS = ("InputLayer", "Flatten", "Reshape")
BYTE_MODEL = ("per trainable weight 10 x 4 B (read forward, read backward, gradient written; Adam reads w, g, m, v "
              "and writes w, m, v); per layer, B examples: inputs read and output written forward, output gradient "
              "read and input gradient written backward (none for the model's input), inputs read again by layers "
              "with weights; Input/Flatten/Reshape move nothing; caches hold nothing between passes")


def _elements(tensor, batch: int) -> int:
    return batch * prod(int(d) for d in tensor.shape[1:])


def step_bytes(model, batch: int, bytes_per_value: int = 4) -> dict[str, Any]:
    """Bytes a training step of ``model`` on ``batch`` examples must move, by the model of this module's doc."""
    import keras

    model_inputs = {id(t) for t in keras.tree.flatten(model.inputs)}
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    activation_values, layers = 0, []
    for layer in model.layers:
        if type(layer).__name__ in VIEW_LAYERS:
            continue
        inputs = keras.tree.flatten(layer.input)
        in_values = sum(_elements(t, batch) for t in inputs)
        out_values = sum(_elements(t, batch) for t in keras.tree.flatten(layer.output))
        grad_in = sum(_elements(t, batch) for t in inputs if id(t) not in model_inputs)
        reread = in_values if layer.trainable_weights else 0
        values = in_values + out_values + out_values + grad_in + reread
        activation_values += values
        layers.append({"layer": layer.name, "input_values": in_values, "output_values": out_values,
                       "accesses": values})
    weight_bytes = WEIGHT_ACCESSES * WEIGHT_BYTES * trainable + WEIGHT_BYTES * frozen
    activation_bytes = activation_values * bytes_per_value
    return {"trainable_weights": trainable, "non_trainable_weights": frozen, "weight_bytes": weight_bytes,
            "activation_value_accesses": activation_values, "activation_bytes": activation_bytes,
            "total_bytes": weight_bytes + activation_bytes, "batch": batch, "bytes_per_value": bytes_per_value,
            "layers": layers}


def multiply_adds(model) -> int:
    """Forward multiply-adds per example: convolutions and dense layers (kernel size x output positions), and one
    per output value of an elementwise Multiply (the attention gate's product)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # GateConv too: the same arithmetic
            out = layer.output.shape
            total += int(np.prod(out[1:-1])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Multiply):
            total += int(np.prod(layer.output.shape[1:]))
    return total


def copy_bandwidth(megabytes: int = 256, repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Bytes read plus bytes written per second by numpy copies of a ``megabytes`` float32 array (best of ``repeats``).

    Measured with one thread and with ``threads`` (default: every CPU) copying one slice each (numpy releases
    the GIL while copying); ``bytes_per_s`` is the better of the two, the most this machine was seen to move.
    """
    threads = threads or os.cpu_count() or 1
    n = megabytes * 2 ** 20 // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    np.copyto(dst, src)  # pages touched before timing

    def best(parts: int) -> float:
        bounds = np.linspace(0, n, parts + 1).astype(int)
        times = []
        for _ in range(repeats):
            workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b]))
                       for a, b in zip(bounds, bounds[1:])]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            times.append(time.perf_counter() - start)
        return 2 * src.nbytes / min(times)  # each byte read once and written once

    one, many = best(1), best(threads)
    return {"bytes_per_s": max(one, many), "one_thread_bytes_per_s": one, f"{threads}_threads_bytes_per_s": many,
            "array_mb": megabytes, "repeats": repeats,
            "how": "np.copyto of a float32 array into another, pages touched first; read + written bytes / best time"}


def floor_ratio(step_s: float, total_bytes: int, bytes_per_s: float) -> float:
    """Step time / the time the step's bytes take at the copy bandwidth (1.0 would be at the floor)."""
    return step_s / (total_bytes / bytes_per_s)
