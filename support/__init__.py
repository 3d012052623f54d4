"""Support shared by the tests (``tests/``) and the benchmarks (``benchmarks/``); not part of the product.

- :mod:`support.mongod`: a private mongod, so that a test session or a benchmark never shares another's
  database.
- :mod:`support.synthetic`: seeded detection images with exact boxes (training tests, ``train_tiny``).
- :mod:`support.images`: seeded images to label (random noise for tests, photo-like for benchmarks).

Run from the repository root (pytest's ``pythonpath`` and ``python -m benchmarks...`` put it on the path).
"""
