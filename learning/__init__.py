"""Offline only: making and judging models, never imported by a live process.

``corpus`` fetches and labels the bootstrap recordings; ``datasets`` compiles them
into windows and edits compiled datasets; ``training`` trains and exports models
(TensorFlow, TFLite); ``compare`` scores two models on archived audio. The feature
extractor, model folders and scoring live in ``inference`` and are used from there.
See README.md.
"""
