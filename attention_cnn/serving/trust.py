"""Check an export folder before TensorFlow reads it: the one way this project trusts an exported SavedModel.

Exports come from a DVC cache and a shared remote, so an export folder is untrusted input, and a SavedModel is
a program: loading it registers its functions and may run some (resource initializers), and calling a signature
runs whatever ops the graph holds, ``WriteFile`` and ``PyFunc`` included. Before ``tf.saved_model.load``,
:func:`check_export`

1. compares every file with the SHA-256 digest ``export.json`` recorded when the export stage wrote it
   (:func:`file_digests`), and refuses files in ``saved_model/`` it does not list: a damaged file is one line
   naming it and how to restore it;
2. parses ``saved_model.pb`` with TensorFlow's protocol buffer classes (nothing is loaded or run) and checks
   every op of every function in the library against :data:`ALLOWED_OPS`, the ops this project's exports use
   (``tests/pipeline/test_export.py`` exports every registered variant and checks the list covers them). A function
   attribute naming something that is not a function of the library counts as that op. The checkpoint ops
   of the saver (:data:`SAVER_OPS`) are accepted only in the functions the saver graph alone calls, never in a
   function a signature or a restored object can reach. A refused export is one line naming it and the op.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from attention_cnn.common import StageError

DIGESTS_KEY = "files"          # export.json: relative path -> sha256 hex of every other file of the export
SAVED_MODEL_PB = "saved_model.pb"
_CHUNK_BYTES = 1 << 20

# The ops of the project's exports: the featurizers (WAV and PNG decoding, the FFT resampler, the STFT),
# every registered variant at inference, the signatures' outputs and the plumbing tf.saved_model.save adds.
ALLOWED_OPS: frozenset[str] = frozenset({
    "AddV2", "All", "ArgMax", "Assert", "AssignVariableOp", "AvgPool", "BatchMatMulV2", "BiasAdd", "BroadcastTo", "Cast",
    "Complex", "ComplexAbs", "ConcatV2", "Const", "Conv2D", "Cos", "Cumsum", "DecodePng", "DecodeWav", "Einsum", "Equal", "Exp",
    "ExpandDims", "Fill", "FloorDiv", "FloorMod", "GatherV2", "Greater", "IRFFT", "Identity", "Less", "Log1p",
    "LogicalAnd", "LowerBound", "MatMul", "Max", "MaxPool", "Maximum", "Mean", "Minimum", "Mul", "Neg", "NoOp",
    "NotEqual", "Pack", "Pad", "Prod", "RFFT", "Range", "ReadVariableOp", "RealDiv",
    "Relu", "Reshape", "Rsqrt", "SelectV2", "Shape", "Sigmoid", "Softmax", "SplitV", "Square", "SquaredDifference",
    "Squeeze", "StatefulPartitionedCall", "StatelessIf", "StatelessWhile", "StopGradient", "StridedSlice", "Sub", "Sum",
    "TensorListFromTensor", "TensorListGetItem", "TensorListReserve", "TensorListSetItem", "TensorListStack",
    "Tile", "Transpose", "While",
})

# The saver graph's ops (its variable handles and tf.saved_model.save's _traced_save / _traced_restore): the
# checkpoint ops write and read files, so these are allowed only where nothing but the saver graph reaches them.
SAVER_OPS: frozenset[str] = frozenset({
    "DisableCopyOnRead", "MergeV2Checkpoints", "Placeholder", "RestoreV2", "SaveV2", "Select", "ShardedFilename",
    "StaticRegexFullMatch", "StringJoin", "VarHandleOp", "VarIsInitializedOp",
})


def export_stage(folder: str | os.PathLike) -> str:
    """The DVC stage that writes ``folder``: ``export@<dataset>-<variant>-<seed>`` for exports/<d>/<v>/seed<k>."""
    parts = Path(os.path.abspath(folder)).parts
    match = re.fullmatch(r"seed(\d+)", parts[-1]) if len(parts) >= 4 and parts[-4] == "exports" else None
    return f"export@{parts[-3]}-{parts[-2]}-{match.group(1)}" if match else "the export stage"


def restore_hint(folder: str | os.PathLike) -> str:
    return (f"restore it with `dvc checkout --relink {folder}` or `dvc pull {folder}`, or rebuild it "
            f"(`dvc repro -f {export_stage(folder)}`)")


def _files(folder: Path, exclude: str) -> Iterator[str]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != exclude:
                yield rel


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: str | os.PathLike, exclude: str) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` but ``exclude`` (export.json itself)."""
    folder = Path(folder)
    return {rel: sha256_file(folder / rel) for rel in _files(folder, exclude)}


def verify_files(folder: str | os.PathLike, info: dict[str, Any], saved_model_dir: str, exclude: str) -> None:
    """Refuse the export unless every file ``info`` lists has its recorded digest and ``saved_model_dir`` holds
    nothing else."""
    folder = Path(folder)
    digests = info.get(DIGESTS_KEY)
    if not isinstance(digests, dict) or not digests:
        raise StageError(f"{folder}: export.json records no file digests, so the export cannot be checked; rebuild "
                         f"it (`dvc repro -f {export_stage(folder)}`)")
    for rel, expected in digests.items():
        if (not isinstance(rel, str) or not isinstance(expected, str) or rel.startswith("/")
                or ".." in Path(rel).parts):
            raise StageError(f"{folder}/export.json: refused: file entry {str(rel)[:80]!r} is not a path inside the "
                             f"export; {restore_hint(folder)}")
        path = folder / rel
        if not path.is_file():
            raise StageError(f"{path}: missing from the export; {restore_hint(folder)}")
        if sha256_file(path) != expected:
            raise StageError(f"{path}: damaged (its SHA-256 differs from the one export.json recorded at export); "
                             f"{restore_hint(folder)}")
    extra = [rel for rel in _files(folder, exclude) if rel.startswith(f"{saved_model_dir}/") and rel not in digests]
    if extra:
        raise StageError(f"{folder / extra[0]}: refused: a file export.json does not list; {restore_hint(folder)}")


def _function_refs(nodes: Iterable[Any]) -> Iterator[str]:
    """Names in the function-valued attributes of ``nodes`` (the callee of a call, a While's body, ...)."""
    for node in nodes:
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            yield from (f.name for f in value.list.func)


def _reachable(roots: Iterable[str], library: dict[str, Any], gradients: dict[str, str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        todo.extend(_function_refs(library[name].node_def))
        if name in gradients:
            todo.append(gradients[name])
    return seen


def graph_ops(saved_model: Any) -> Iterator[tuple[str, str, bool]]:
    """(where, op, saver only) for every op of a parsed SavedModel: the nodes of each meta graph and of each
    library function, and every function attribute that names no library function (it would run as that op)."""
    for meta in saved_model.meta_graphs:
        library = {f.signature.name: f for f in meta.graph_def.library.function}
        gradients = {g.function_name: g.gradient_func for g in meta.graph_def.library.gradient}
        objects = set(meta.object_graph_def.concrete_functions)
        for node in meta.object_graph_def.nodes:
            objects.update(node.function.concrete_functions)
            if node.WhichOneof("kind") == "bare_concrete_function":
                objects.add(node.bare_concrete_function.concrete_function_name)
        from_saver = _reachable(_function_refs(meta.graph_def.node), library, gradients)
        saver_only = from_saver - _reachable(objects, library, gradients)
        for node in meta.graph_def.node:
            yield "the saver graph", node.op, True
        for name in _function_refs(meta.graph_def.node):
            if name not in library:
                yield "the saver graph", name, True
        for name, function in library.items():
            only = name in saver_only
            for node in function.node_def:
                yield f"function {name}", node.op, only
            for ref in _function_refs(function.node_def):
                if ref not in library:
                    yield f"function {name}", ref, only


def read_saved_model(path: Path):
    """``saved_model.pb`` parsed into TensorFlow's ``SavedModel`` message (a one-line error when it is not one)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    message = saved_model_pb2.SavedModel()
    try:
        message.ParseFromString(path.read_bytes())
    except (OSError, DecodeError, RuntimeWarning) as exc:
        raise StageError(f"{path}: not a readable SavedModel ({str(exc)[:200] or type(exc).__name__}); "
                         f"{restore_hint(path.parent.parent)}") from None
    return message


def check_ops(folder: str | os.PathLike, saved_model_dir: str) -> None:
    """Refuse the export unless every op of its SavedModel is in :data:`ALLOWED_OPS` (see the module docstring)."""
    folder = Path(folder)
    message = read_saved_model(folder / saved_model_dir / SAVED_MODEL_PB)
    for where, op, saver_only in graph_ops(message):
        if op in ALLOWED_OPS or (saver_only and op in SAVER_OPS):
            continue
        raise StageError(f"{folder}: refused: {where} of the SavedModel runs op {op[:80]!r}, which this project's "
                         f"exports do not use (allowed: attention_cnn/serving/trust.py); do not load it, "
                         f"{restore_hint(folder)}")


def check_export(folder: str | os.PathLike, info: dict[str, Any], saved_model_dir: str, exclude: str) -> None:
    """:func:`verify_files`, then :func:`check_ops`: call before anything loads the export's SavedModel."""
    verify_files(folder, info, saved_model_dir, exclude)
    check_ops(folder, saved_model_dir)
