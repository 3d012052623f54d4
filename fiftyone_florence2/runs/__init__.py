"""Labelling runs over FiftyOne collections: checks before any model work, the run itself, the writes
read back, locks, run records, patches, frames and video views, and the ``Model`` for ``apply_model``.
"""
