"""The benchmark suite: ``python -m benchmarks.run`` (full) or ``python -m benchmarks.run --quick``.

See ``BENCHMARKS.md`` for what each figure means and the last recorded numbers.
"""
