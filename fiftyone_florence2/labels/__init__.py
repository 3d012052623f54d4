"""FiftyOne labels from Florence-2's answers: converting, merging tiles, labelling batches of items.

Imports the core, numpy, supervision and FiftyOne's labels; never torch or transformers.
"""
