"""Machine learning that is neither produced nor consumed live.

``features`` is the single spectrogram implementation used by training AND
inference; ``modelfolder`` reads and validates a model folder; ``inference`` runs
a TFLite model with LiteRT (no TensorFlow import); ``corpus``/``dataset``/``train``
build the bootstrap corpus and train the selector (TensorFlow, training only).
"""
