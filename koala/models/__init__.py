"""koala's Keras models, one module per paper family.

Importing this package (``import koala`` does) registers every koala layer and model with
Keras' serialisation, so a saved ``.keras`` file reloads with plain
``keras.saving.load_model(path)`` and no ``custom_objects``. Models are looked up by name only
in ``koala.training.MODELS``.
"""

from koala.models import (
    fusion,  # noqa: F401  (registers FusionLayer, FusionColorizer)
    sr,  # noqa: F401  (registers SRCNN, FSRCNN, SRAutoencoder)
)
