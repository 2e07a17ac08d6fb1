"""Feeds of an image store for deep-learning frameworks, one module per framework.

:mod:`idigdask.loaders.keras` holds :class:`~idigdask.loaders.keras.StoreFeed`, a
``keras.utils.PyDataset``. Importing this package imports no framework; the batches
themselves are made by the framework-free functions of :mod:`idigdask.batches`.
"""
