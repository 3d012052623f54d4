"""The model layer: Florence-2 in torch and transformers (loading, devices, image reading and
preprocessing, batched generation and scoring), and random-weight checkpoints.

Imports the core, torch, transformers, numpy and pillow; never FiftyOne, so that it runs where FiftyOne
is not installed (the GPU benchmark). tests/unit/test_shape.py checks it.
"""
