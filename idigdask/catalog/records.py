"""Specimen records from iDigBio's search API, for labels taken from specimen metadata.

A media record points at its specimen records through ``record_uuids``; the specimens'
``family``, ``genus`` or ``scientificname`` make the labels of a multi-class task
(Lycopodiaceae against Selaginellaceae, the second task of Schuettpelz et al. 2017).
:func:`search_records` asks ``/search/records`` for given record uuids, a batch of them
a request (``rq={"uuid": [...]}``), with the retries, deadlines and byte caps of the
media search (:mod:`idigdask.catalog.search`).

As a label table (:func:`idigdask.attach_labels`, ``idigdask catalog --labels``), the
records endpoint is named by its URL, ``https://search.idigbio.org/v2/search/records``,
or by ``search:records`` for iDigBio's own; the catalog's record uuids are then looked
up. Columns are the item's ``indexTerms`` (iDigBio's cleaned fields, lowercased:
``family``, ``genus``, ``scientificname``) and the provider's raw record as
``data.<term>`` (``data.dwc:family``, as the provider wrote it).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd

from ..errors import UserError
from .search import MAX_BYTES, SEARCH_URL, _checked_base_url, _get_with_retries, items_frame

#: The label-table name of iDigBio's own records endpoint.
RECORDS_SOURCE = "search:records"
#: Record uuids asked for in one request: some 4.5 kB of URL, well inside what servers take.
BATCH = 100


def is_records_source(table: Any) -> bool:
    """Whether a label table names the search API's records endpoint.

    Parameters
    ----------
    table : object
        A label table as given to :func:`idigdask.attach_labels`: a path, URL, frame...

    Returns
    -------
    bool
        True for ``"search:records"`` or a string URL ending in ``/search/records``
        (a trailing slash allowed); False for anything else, non-strings included.

    Examples
    --------
    >>> is_records_source("search:records")
    True
    >>> is_records_source("https://search.idigbio.org/v2/search/records/")
    True
    >>> is_records_source("labels.csv"), is_records_source(None)
    (False, False)
    """
    return isinstance(table, str) and (
        table == RECORDS_SOURCE or table.rstrip("/").endswith("/search/records"))


def records_base_url(table: str) -> str:
    """The search API root of a records source (``.../v2`` of ``.../v2/search/records``)."""
    if table == RECORDS_SOURCE:
        return SEARCH_URL
    return _checked_base_url(table.rstrip("/")[:-len("/search/records")])


def search_records(record_uuids: Iterable[str], *, base_url: str = SEARCH_URL,
                   fields: list[str] | None = None, batch_size: int = BATCH,
                   retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                   session: Any = None, max_bytes: int = MAX_BYTES) -> pd.DataFrame:
    """Fetch specimen records by uuid from iDigBio's search API.

    Parameters
    ----------
    record_uuids : iterable of str
        Specimen record uuids (duplicates and blanks are dropped).
    base_url : str
        The search API root, ``https://search.idigbio.org/v2``.
    fields : list of str, optional
        ``indexTerms`` fields to return (default: all), e.g. ``["uuid", "family"]``.
    batch_size : int
        Uuids asked for in one request (at most 5000).
    retries, backoff, timeout, session, max_bytes
        As for :func:`idigdask.catalog.search_media`.

    Returns
    -------
    pandas.DataFrame
        One row per record found: ``uuid``, the ``indexTerms`` fields, ``data.<term>``
        columns of the provider's record. Uuids the API does not know are absent.

    Raises
    ------
    UserError
        On a 4xx answer, an answer that is not a page of items, or failures worth
        retrying after every retry.

    Examples
    --------
    >>> records = search_records(["0a1b..."], fields=["uuid", "family"])  # doctest: +SKIP
    >>> records["family"].tolist()                                         # doctest: +SKIP
    ['lycopodiaceae']
    """
    if not (isinstance(batch_size, int) and 1 <= batch_size <= 5000):
        raise UserError(f"batch_size must be between 1 and 5000, not {batch_size!r}")
    url = f"{_checked_base_url(base_url).rstrip('/')}/search/records"
    wanted = sorted({str(u).strip() for u in record_uuids if u is not None and str(u).strip()})
    items: list[dict] = []
    for start in range(0, len(wanted), batch_size):
        batch = wanted[start:start + batch_size]
        params = {"rq": json.dumps({"uuid": batch}), "limit": len(batch), "offset": 0,
                  "sort": "uuid"}
        if fields:
            params["fields"] = json.dumps(list(fields))
        page = _get_with_retries(url, params, session=session, retries=retries,
                                 backoff=backoff, timeout=timeout, max_bytes=max_bytes)
        items += page.get("items", [])[:len(batch)]
    frame = items_frame(items)
    if frame.empty:
        return pd.DataFrame({"uuid": pd.Series([], dtype=object)})
    return frame.drop_duplicates("uuid").reset_index(drop=True)
