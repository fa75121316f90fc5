"""Model families, one module each (``koala.models.fusion``, ...).

Nothing is imported or registered here: the trainer keeps the one explicit name -> constructor
dict, and importing a model module is what registers its custom layers with Keras.
"""
