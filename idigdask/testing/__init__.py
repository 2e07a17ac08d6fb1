"""Real local stand-ins for what the tests and benchmarks cannot reach here.

A loopback HTTP media server that can also misbehave on purpose, and a local server that
answers like iDigBio's search API; they bind to 127.0.0.1 only. And the registry corpora
of the tests (:mod:`idigdask.testing.registry`): pinned source distributions on PyPI.
"""
