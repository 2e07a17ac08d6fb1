"""Sphinx configuration of the idigdask documentation (``make docs``)."""

import idigdask

project = "idigdask"
author = "the idigdask developers"
release = idigdask.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc", "sphinx.ext.viewcode"]
autosummary_generate = True
numpydoc_show_class_members = False
html_theme = "pydata_sphinx_theme"
exclude_patterns = ["_build"]
