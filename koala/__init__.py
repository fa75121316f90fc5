"""koala: classic deep-learning image-restoration papers in Keras 3 on TensorFlow.

Importing koala (or any submodule) never runs work and never reads flags, and ``import koala``
imports nothing heavy. The command lines live in :mod:`koala.cli` (``python -m koala.train``,
``koala.colorize``, ``koala.upscale``, ``koala.codec``, ``koala.evaluate`` are aliases); the
model families in :mod:`koala.tasks`; every model name in :mod:`koala.registry`, whose import
also registers koala's layers for a plain ``keras.saving.load_model``.
"""

__version__ = "0.1.0"
