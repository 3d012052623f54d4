"""The pure core: the task table, prompts, parsing, answers (labels <-> text), decoding, tile and crop
geometry, option declarations, checkpoint names and errors.

Imports the standard library only (no numpy, torch, transformers or FiftyOne): tests/unit/test_shape.py checks it.
"""
