"""Saving and loading koala's ``.keras`` files: atomic saves, checked loads.

A koala layer or model loads once its module is imported (its registered name,
``koala>FusionColorizer`` ..., is the file format's contract): the tools import their
family's models; :mod:`koala.registry` imports every family, so a user who loads with plain
``keras.saving.load_model`` does ``import koala.registry`` first.
"""

import os
import re
import zipfile

import keras

from koala import presets
from koala.core.errors import KoalaError
from koala.core.io import atomic_write


def save(model: keras.Model, path) -> None:
    """``model.save`` through :func:`koala.core.io.atomic_write`: a kill never leaves a
    half-written ``.keras`` (the temporary file is removed on failure)."""
    atomic_write(path, model.save, fsync=False)


def load(path, types: tuple, kind: str) -> keras.Model:
    """Loads a saved ``.keras`` model for inference (``compile=False``) and checks its type.

    ``path`` may be a preset name (:mod:`koala.presets`): its file is sha256-checked first.

    Raises:
      KoalaError: the preset is unknown or damaged, the file is missing, is not a loadable
        Keras model, or holds a model that is not one of ``types`` (``kind`` names what was
        expected, for the message).
    """
    path = presets.resolve(path)
    if not os.path.isfile(path):
        raise KoalaError(f"model file not found: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise KoalaError(f"{path} is not a Keras model (a .keras file is a zip archive)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises ValueError, OSError, zipfile errors, ...
        unknown = re.search(r"Could not locate class '(\w+)'", str(e))
        if unknown:  # a model of a family this tool doesn't load, or not koala's
            raise KoalaError(f"{path} holds a {unknown.group(1)}, not {kind}") from e
        message = " ".join(str(e).split())
        if len(message) > 300:
            message = message[:300] + "..."
        raise KoalaError(
            f"{path} is not a loadable Keras model ({type(e).__name__}: {message})") from e
    if not isinstance(model, types):
        raise KoalaError(f"{path} holds a {type(model).__name__}, not {kind}")
    return model
