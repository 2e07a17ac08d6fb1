"""The media catalog: every source of iDigBio media in one lazy, normalized table.

The first stage of the route: a GUODA media parquet, a search of iDigBio's API, a
Darwin Core Archive or a plain table of URLs becomes a :class:`dask.dataframe.DataFrame`
with one row per media record, in the schema of :mod:`idigdask.catalog.schema`. Rows
are never dropped silently: what cannot be used is marked in ``excluded`` with a reason.

Modules, one per source and step:

* ``schema`` - the columns, dtypes and exclusion reasons;
* ``guoda`` - GUODA parquet dumps (and the mapping of iDigBio media records);
* ``search`` - iDigBio's search API and media derivative URLs;
* ``dwca`` - Darwin Core Archives;
* ``tables`` - CSV/TSV/JSON-lines/parquet URL tables and written catalogs;
* ``normalize``, ``dedupe`` - row checks and duplicate detection across partitions;
* ``labels``, ``subset`` - label joins, samples and per-label caps;
* ``read`` - :func:`read_catalog` and :func:`summarize`; ``write`` - :func:`write_catalog`.
"""

from __future__ import annotations

from .labels import attach_labels
from .read import FORMATS, read_catalog, summarize
from .schema import OCCURRENCE_FIELDS, STRING
from .search import media_url, search_media, use_derivative
from .subset import cap_per_label, sample
from .write import write_catalog

__all__ = [
    "FORMATS",
    "OCCURRENCE_FIELDS",
    "STRING",
    "attach_labels",
    "cap_per_label",
    "media_url",
    "read_catalog",
    "sample",
    "search_media",
    "summarize",
    "use_derivative",
    "write_catalog",
]
