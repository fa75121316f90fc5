"""Writes a family's serving module (a ``tf.Module`` whose ``tf.function`` signatures take and
return uint8 images) as a SavedModel, a LiteRT (TFLite) flatbuffer or an ONNX file.

The families build their modules (``koala.tasks.*.serving``); :mod:`koala.cli.export` picks
one and calls these. Every write is atomic: a SavedModel is written into a temporary folder
beside the target and renamed; a flatbuffer or ONNX file through
:func:`koala.core.io.atomic_write`. An existing target is never overwritten unless asked.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from koala.core.errors import KoalaError
from koala.core.io import atomic_write

__all__ = ["FORMATS", "ExportError", "float32_copy", "save_savedmodel", "to_litert", "to_onnx"]

_MIXED = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")

FORMATS = ("savedmodel", "litert", "onnx")


class ExportError(KoalaError):
    """An export that cannot be made here (a missing converter, an unsupported op)."""


def _free_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ExportError(f"{path} exists: give another output or --overwrite")


def _to_float32(config):
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and \
                config.get("config", {}).get("name") in _MIXED:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _to_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_to_float32(v) for v in config]
    return "float32" if config in _MIXED else config


def float32_copy(model):
    """``model`` rebuilt from its config with every mixed-precision dtype policy float32
    and its weights copied: LiteRT has no bfloat16 kernels. A float32 model is returned as
    it is."""
    import keras

    config = model.get_config()
    converted = _to_float32(config)
    if converted == config:
        return model
    with keras.utils.custom_object_scope({}):
        copy = type(model).from_config(converted)
    copy.set_weights(model.get_weights())
    return copy


def save_savedmodel(module, output_dir, signatures: dict, *, overwrite: bool = False) -> Path:
    """``tf.saved_model.save(module)`` with ``signatures`` (name -> ``tf.function`` with an
    input signature; the first is also "serving_default"), atomically into ``output_dir``."""
    import tensorflow as tf

    target = Path(output_dir)
    _free_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{os.getpid()}-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    named = dict(signatures)
    named.setdefault("serving_default", next(iter(signatures.values())))
    try:
        tf.saved_model.save(module, str(tmp), signatures=named)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def to_litert(saved_dir, output_file, *, signature: str = "serving_default",
              int8: bool = False, overwrite: bool = False) -> Path:
    """A LiteRT flatbuffer of one signature of a SavedModel: float32, or with ``int8`` the
    dynamic-range quantisation (int8 weights, float activations)."""
    import tensorflow as tf

    # The weights are frozen into constants first: converted straight from the SavedModel,
    # they stay resource variables that the LiteRT interpreter never initialises (garbage or
    # NaN out, or a READ_VARIABLE error; TF 2.21).
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    target = Path(output_file)
    _free_target(target, overwrite)
    loaded = tf.saved_model.load(str(saved_dir))
    frozen = convert_variables_to_constants_v2(loaded.signatures[signature])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], loaded)
    # Builtins only: a LiteRT runtime without the Flex delegate must run the file.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises many types; say which model and why
        raise ExportError(f"LiteRT conversion of {saved_dir} failed: "
                          f"{str(e).strip().splitlines()[-1][:300]}") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, flatbuffer)
    return target


def to_onnx(function, output_file, *, opset: int = 17, overwrite: bool = False) -> Path:
    """An ONNX file of one ``tf.function`` (with an input signature) through tf2onnx.

    Raises:
      ExportError: tf2onnx is not installed or cannot convert this graph; one line that says
        why and what to install.
    """
    target = Path(output_file)
    _free_target(target, overwrite)
    try:
        import tf2onnx
    except ImportError as e:
        raise ExportError(f"ONNX export needs tf2onnx and onnx (pip install 'koala[onnx]': "
                          f"tf2onnx 1.17, onnx 1.23 install beside TensorFlow 2.21): {e}") from e
    # tf2onnx logs a traceback when one of its graph optimizers gives up (its einsum optimizer
    # on Keras' Dense einsums: the graph is kept as it was, correct); not the user's concern.
    optimizer_log = logging.getLogger("tf2onnx.optimizer")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=function.input_signature, opset=opset)
    except Exception as e:
        raise ExportError(f"tf2onnx {tf2onnx.__version__} could not convert the graph: "
                          f"{str(e).strip().splitlines()[-1][:300]}") from e
    finally:
        optimizer_log.setLevel(level)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, proto.SerializeToString())
    return target
