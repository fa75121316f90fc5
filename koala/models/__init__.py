"""koala's Keras models, one module per paper family.

Importing this package (``import koala`` does) registers every koala layer and model with
Keras' serialisation, so a saved ``.keras`` file reloads with plain
``keras.saving.load_model(path)`` and no ``custom_objects``. Models are looked up by name only
in ``koala.training.MODELS``.
"""

import os
import zipfile

import keras

from koala.errors import KoalaError
from koala.models import (
    codec,  # noqa: F401  (registers InvertibleGrayscale)
    colorgan,  # noqa: F401  (registers ColorGenerator, ColorGAN)
    fusion,  # noqa: F401  (registers FusionLayer, FusionColorizer)
    lal,  # noqa: F401  (registers LalColorizer)
    sr,  # noqa: F401  (registers SRCNN, FSRCNN, SRAutoencoder)
)


def save(model: keras.Model, path) -> None:
    """``model.save`` to a temporary name in the same folder, then a rename over ``path``: a
    kill never leaves a half-written ``.keras`` (the temporary file is removed on failure)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, types: tuple, kind: str) -> keras.Model:
    """Loads a saved ``.keras`` model for inference (``compile=False``) and checks its type.

    Raises:
      KoalaError: the file is missing, is not a loadable Keras model, or holds a model that
        is not one of ``types`` (``kind`` names what was expected, for the message).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise KoalaError(f"model file not found: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise KoalaError(f"{path} is not a Keras model (a .keras file is a zip archive)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises ValueError, OSError, zipfile errors, ...
        message = " ".join(str(e).split())
        if len(message) > 300:
            message = message[:300] + "..."
        raise KoalaError(
            f"{path} is not a loadable Keras model ({type(e).__name__}: {message})") from e
    if not isinstance(model, types):
        raise KoalaError(f"{path} holds a {type(model).__name__}, not {kind}")
    return model
