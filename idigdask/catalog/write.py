"""Write a catalog to parquet so that :func:`~idigdask.catalog.read_catalog` reads it back."""

from __future__ import annotations

import pandas as pd

from ..errors import UserError
from . import schema as S


def write_catalog(df, path: str, *, storage_options: dict | None = None, overwrite: bool = True,
                  compute: bool = True):
    """Write a catalog as a parquet folder (one file per partition).

    The schema is fixed (``record_uuids`` as ``list<string>``, sizes as ``int64``, the
    rest as strings) so that every part file agrees, even one whose lists are all
    empty. ``read_catalog(path)`` recognises the result as a catalog.

    Parameters
    ----------
    df : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog.
    path : str
        Folder path or fsspec URL, e.g. ``"catalog.parquet"``.
    storage_options : dict, optional
        Passed to fsspec.
    overwrite : bool
        Remove what is at ``path`` first (else old part files could mix with new ones).
        It is removed when the call is made, even with ``compute=False``.
    compute : bool
        False returns a Dask object to compute later.

    Returns
    -------
    None or dask.dataframe.Scalar
        None once written; with ``compute=False``, the lazy write.

    Raises
    ------
    UserError
        When ``df`` does not have a catalog's columns (see
        :mod:`idigdask.catalog.schema`).

    Examples
    --------
    >>> catalog = read_catalog("urls.csv", label_column="stained")      # doctest: +SKIP
    >>> write_catalog(catalog, "catalog.parquet")                       # doctest: +SKIP
    >>> read_catalog("catalog.parquet").columns.equals(catalog.columns)  # doctest: +SKIP
    True
    """
    if not S.is_catalog_columns(df.columns):
        raise UserError(f"cannot write {path}: the frame is not a catalog (columns: "
                        f"{', '.join(df.columns)})")
    if isinstance(df, pd.DataFrame):
        from .read import from_pandas

        df = from_pandas(df)
    schema = S.arrow_schema(list(df.columns))
    return df.to_parquet(path, schema=schema, write_index=False, overwrite=overwrite,
                         storage_options=storage_options, compute=compute)
