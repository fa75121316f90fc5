"""koala: classic deep-learning image-restoration papers in Keras 3 on TensorFlow.

Importing koala (or any submodule) never runs work and never reads flags; entry points
live in ``koala.train``, ``koala.colorize``, ``koala.evaluate`` and ``data_prep/``.
"""

__version__ = "0.1.0"

# Registers koala's Keras layers and models, so saved .keras files load with plain
# keras.saving.load_model once koala is imported.
from koala import models  # noqa: E402, F401
