"""idigdask's settings in dask.config, under the ``idigdask`` key.

The defaults live in ``idigdask.yaml`` next to this module and are registered with
:func:`dask.config.update_defaults` when this module is imported, as dask-jobqueue and
distributed do. So, from the lowest to the highest priority, a setting comes from that
file, from a YAML file in dask's configuration folders (``~/.config/dask/idigdask.yaml``
or ``$DASK_CONFIG``), from an environment variable
(``DASK_IDIGDASK__FETCH__ALLOW_PRIVATE=true``), from :func:`dask.config.set`, and last
from the keyword argument of a call. Unlike dask-jobqueue, nothing is written to the
user's configuration folder.

``import idigdask`` does not import this module (nor dask); the options that read a
setting import it when their default is first needed.
"""

from __future__ import annotations

import pathlib
from typing import Any

import dask.config
import yaml

from .errors import UserError

__all__ = ["DEFAULTS_FILE", "get", "get_bool", "get_list"]

#: The file of defaults, shipped as package data.
DEFAULTS_FILE = pathlib.Path(__file__).with_name("idigdask.yaml")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def _register() -> dict:
    # libyaml's safe loader where PyYAML has it: the same answer in a tenth of the time
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with DEFAULTS_FILE.open(encoding="utf-8") as f:
        defaults = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    dask.config.update_defaults(defaults)
    return defaults


_DEFAULTS = _register()


def _restore_defaults() -> None:
    """Put the defaults back under whatever the config holds now.

    A ``with dask.config.set({"idigdask.x": ...})`` entered before this module was
    imported removes, as it exits, the whole ``idigdask`` key it found missing on
    entry, defaults included.
    """
    dask.config.update(dask.config.config, _DEFAULTS, priority="old")


def get(key: str) -> Any:
    """The setting ``idigdask.<key>``, e.g. ``get("fetch.allow-private")``.

    Parameters
    ----------
    key : str
        The setting's name under ``idigdask.``, dotted: ``"<section>.<name>"``.

    Returns
    -------
    object
        The value as dask.config holds it, unconverted: text from an environment
        variable stays text (the options' :func:`~idigdask.options.coerce_fields`
        converts it).

    Raises
    ------
    UserError
        For a key that idigdask does not know.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"idigdask.build.size": 128}):
    ...     get("build.size")
    128
    >>> get("build.colour")
    Traceback (most recent call last):
    ...
    idigdask.errors.UserError: unknown idigdask setting idigdask.build.colour
    """
    try:
        return dask.config.get(f"idigdask.{key}")
    except KeyError:
        pass
    _restore_defaults()
    try:
        return dask.config.get(f"idigdask.{key}")
    except KeyError:
        raise UserError(f"unknown idigdask setting idigdask.{key}") from None


def get_bool(key: str) -> bool:
    """A yes/no setting; strings such as ``"true"`` or ``"0"`` are understood.

    Parameters
    ----------
    key : str
        The setting's name under ``idigdask.``.

    Returns
    -------
    bool
        True for ``true``, ``yes``, ``on`` and ``1``; False for ``false``, ``no``,
        ``off``, ``0``, an empty string and None (any case).

    Raises
    ------
    UserError
        For an unknown key, or a value that is none of these.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"idigdask.fetch.allow-private": "yes"}):
    ...     get_bool("fetch.allow-private")
    True
    >>> with dask.config.set({"idigdask.fetch.allow-private": "maybe"}):
    ...     get_bool("fetch.allow-private")
    Traceback (most recent call last):
    ...
    idigdask.errors.UserError: setting idigdask.fetch.allow-private must be true or false, not 'maybe'
    """
    value = get(key)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise UserError(f"setting idigdask.{key} must be true or false, not {value!r}")


def get_list(key: str) -> tuple[str, ...]:
    """A list setting; one string is split at commas.

    Parameters
    ----------
    key : str
        The setting's name under ``idigdask.``.

    Returns
    -------
    tuple of str
        The items, as strings; from one string, its comma-separated parts without
        surrounding blanks; empty for None.

    Raises
    ------
    UserError
        For an unknown key, or a value that is neither a list, a string nor None.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"idigdask.fetch.allow-networks": "10.1.2.0/24, fd00::/8"}):
    ...     get_list("fetch.allow-networks")
    ('10.1.2.0/24', 'fd00::/8')
    >>> with dask.config.set({"idigdask.fetch.allow-networks": ["10.1.2.0/24"]}):
    ...     get_list("fetch.allow-networks")
    ('10.1.2.0/24',)
    """
    value = get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(part) for part in value)
    raise UserError(f"setting idigdask.{key} must be a list, not {value!r}")
