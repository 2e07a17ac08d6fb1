"""The small error hierarchy of idigdask.

Two kinds of trouble are kept apart on purpose:

* :class:`UserError` is a mistake of the caller (a missing file, an unknown column, a
  bad option). The CLI prints its message as one line and exits with code 2.
* :class:`MediaError` is a problem with one media record (a 404, a truncated JPEG, a
  decompression bomb). It never stops a run: the pipeline turns it into a ledger entry
  with a ``reason`` category and a message.
"""

from __future__ import annotations


class IdigdaskError(Exception):
    """Base class of every error idigdask raises on purpose."""


class UserError(IdigdaskError, ValueError):
    """A mistake in what the caller asked for: reported in one line, exit code 2.

    Examples
    --------
    >>> from idigdask import UserError
    >>> try:
    ...     idigdask.read_catalog("no-such-file.parquet")              # doctest: +SKIP
    ... except UserError as error:
    ...     print(error)                                               # one line, exit code 2 in the CLI
    """


class MediaError(IdigdaskError):
    """One media record could not be fetched, decoded or verified.

    Parameters
    ----------
    reason : str
        A short category for the ledger, such as ``"http_404"``, ``"timeout"``,
        ``"not_an_image"``, ``"truncated"`` or ``"bomb"``.
    message : str
        A human-readable explanation (never containing credentials).

    Examples
    --------
    A bad record becomes a ledger row with its reason instead of stopping the build:

    >>> ledger = idigdask.read_ledger("sheets.zarr")                     # doctest: +SKIP
    >>> ledger[ledger.status == "failed"][["media_uuid", "reason"]]      # doctest: +SKIP
    """

    def __init__(self, reason: str, message: str = ""):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or reason
