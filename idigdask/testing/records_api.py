"""The search API stand-in with specimen records: ``GET /v2/search/records`` too.

:class:`RecordsAPIServer` is :class:`~idigdask.testing.search_api.SearchAPIServer`
(media search, media redirects, failures on purpose) that also answers
``/v2/search/records`` from specimen record items, in the API's shape, with the same
``rq`` filters (a list value means "any of"), ``limit``, ``offset``, ``sort`` and
``fields``. Its ``failures`` apply to the records requests as well.

Examples
--------
>>> records = [make_record_item("r1", family="Lycopodiaceae")]           # doctest: +SKIP
>>> with RecordsAPIServer(records=records) as api:                       # doctest: +SKIP
...     search_records(["r1"], base_url=api.base_url)
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Sequence

from .search_api import SearchAPIServer, _Handler

__all__ = ["RecordsAPIServer", "make_record_item"]


def make_record_item(uuid: str, *, family: str | None = None, genus: str | None = None,
                     scientific_name: str | None = None, data: dict | None = None,
                     recordset: str = "rs-0") -> dict:
    """One specimen record item as the search API returns it.

    ``indexTerms`` holds iDigBio's cleaned fields, lowercased as iDigBio indexes them
    (``family``, ``genus``, ``scientificname``); ``data`` the provider's record, with
    the Darwin Core terms as given (``dwc:family``...).

    Parameters
    ----------
    uuid : str
        The record's uuid.
    family, genus, scientific_name : str, optional
        Taxon fields; those given appear in ``data`` (``dwc:family``, ``dwc:genus``,
        ``dwc:scientificName``) as given and in ``indexTerms`` lowercased.
    data : dict, optional
        More provider terms, merged into ``data`` (over the taxon fields).
    recordset : str
        The ``indexTerms`` recordset uuid.

    Returns
    -------
    dict
        The item: ``uuid``, ``type``, ``etag``, ``version``, ``data``, ``recordIds``
        and ``indexTerms``.

    Examples
    --------
    >>> item = make_record_item("r1", family="Lycopodiaceae")
    >>> item["indexTerms"]
    {'uuid': 'r1', 'recordset': 'rs-0', 'family': 'lycopodiaceae'}
    >>> item["data"]
    {'dwc:family': 'Lycopodiaceae'}
    """
    raw = {"dwc:family": family, "dwc:genus": genus, "dwc:scientificName": scientific_name}
    index = {"uuid": uuid, "recordset": recordset, "family": family, "genus": genus,
             "scientificname": scientific_name}
    return {"uuid": uuid, "type": "records", "etag": f"etag-{uuid}", "version": 1,
            "data": {**{k: v for k, v in raw.items() if v is not None}, **(data or {})},
            "recordIds": [],
            "indexTerms": {k: (v.lower() if isinstance(v, str) and k != "uuid" else v)
                           for k, v in index.items() if v is not None}}


class RecordsAPIServer(SearchAPIServer):
    """The search API stand-in, with specimen records.

    Parameters
    ----------
    items : sequence of dict
        Media items (see :func:`~idigdask.testing.search_api.make_media_item`).
    records : sequence of dict
        Specimen record items (see :func:`make_record_item`).
    **kwargs
        As for :class:`~idigdask.testing.search_api.SearchAPIServer`.

    Attributes
    ----------
    record_requests : list of dict
        The query parameters of every records request received.

    Examples
    --------
    >>> from idigdask.catalog.records import search_records
    >>> records = [make_record_item("r1", family="Lycopodiaceae")]
    >>> with RecordsAPIServer(records=records) as api:                  # doctest: +SKIP
    ...     found = search_records(["r1"], base_url=api.base_url, fields=["uuid", "family"])
    >>> found["family"].tolist()                                         # doctest: +SKIP
    ['lycopodiaceae']
    """

    def __init__(self, items: Sequence[dict] = (), *, records: Sequence[dict] = (),
                 **kwargs: Any):
        super().__init__(items, **kwargs)
        self.records = SearchAPIServer(records)  # its search() over the records; never started
        self.record_requests: list[dict] = []

    def start(self) -> "RecordsAPIServer":
        """Bind to a free port on 127.0.0.1 and serve in a background thread."""
        import threading
        from http.server import ThreadingHTTPServer

        handler = type("Handler", (_RecordsHandler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self


class _RecordsHandler(_Handler):
    api: RecordsAPIServer

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        parts = urllib.parse.urlsplit(self.path)
        if parts.path.rstrip("/") != "/v2/search/records":
            super().do_GET()
            return
        params = dict(urllib.parse.parse_qsl(parts.query))
        self.api.record_requests.append(params)
        failure = self.api.next_failure()
        if failure is None:
            self._send(*self.api.records.search(params))
        elif isinstance(failure, str):
            self._send_faulty(failure, *self.api.records.search(params))
        else:
            self._send(failure, {"error": "failing on purpose"})
