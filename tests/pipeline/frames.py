"""Catalog frames in the normalized media schema, for the build tests."""

from __future__ import annotations

import pandas as pd


def catalog_frame(uris, uuids=None, *, labels=None, records=None, hashes=None) -> pd.DataFrame:
    """A catalog in the normalized media schema."""
    n = len(uris)
    frame = pd.DataFrame({
        "media_uuid": uuids or [f"row-{i:02d}" for i in range(n)],
        "access_uri": list(uris),
        "format": ["image/jpeg"] * n,
        "record_uuids": records or [[f"rec-{i}"] for i in range(n)],
        "width": pd.array([None] * n, dtype="Int64"),
        "height": pd.array([None] * n, dtype="Int64"),
        "license": [None] * n,
        "hash_function": [h[0] if h else None for h in (hashes or [None] * n)],
        "hash_value": [h[1] if h else None for h in (hashes or [None] * n)],
        "recordset": [None] * n,
        "excluded": [None] * n,
    })
    if labels is not None:
        frame.insert(10, "label", labels)
    return frame
