"""The convention of every stage's options: a dataclass whose defaults live in dask.config.

Each stage has one options dataclass (:class:`~idigdask.fetch.FetchOptions`,
:class:`~idigdask.build.BuildOptions`, :class:`~idigdask.train.TrainOptions`,
:class:`~idigdask.predict.PredictOptions`). A field's default is not written in the
class: it is read, when the object is made, from ``idigdask.<stage>.<field>`` in
dask.config, whose defaults are ``idigdask.yaml`` (see :mod:`idigdask.config`). So,
as in dask and dask-jobqueue, from the lowest to the highest priority a value comes
from that file, from ``~/.config/dask/idigdask.yaml``, from an environment variable
(``DASK_IDIGDASK__FETCH__TIMEOUT=60``), from :func:`dask.config.set`, from the
options object a call is given, and last from a keyword of the call.

The public functions take ``options=`` and keyword overrides named as the fields
(:func:`with_overrides`), so ``build_dataset(catalog, store, size=128)`` and
``build_dataset(catalog, store, options=BuildOptions(size=128))`` are the same call.
Errors name the option (``size``); the command line maps it to its flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import UserError

__all__ = ["OptionError", "setting", "with_overrides"]

T = TypeVar("T")


class OptionError(UserError):
    """An option out of range or unknown: ``option`` names it, for the CLI to map to a flag.

    Parameters
    ----------
    option : str
        The option's name as the Python API spells it (``"size"``, ``"jobs"``).
    message : str
        What is wrong with its value.

    Attributes
    ----------
    option : str
        The option's name.
    detail : str
        ``message``, without the name in front.

    Examples
    --------
    >>> error = OptionError("size", "0 is out of range: 16 to 4096")
    >>> str(error), error.option, error.detail
    ('size: 0 is out of range: 16 to 4096', 'size', '0 is out of range: 16 to 4096')
    >>> isinstance(error, UserError)
    True
    """

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.detail = message


def setting(key: str) -> Any:
    """A dataclass field whose default is the dask config's ``idigdask.<key>``.

    dask.config is imported only when a default is first needed, so that
    ``import idigdask`` stays light; the value is converted to the field's type when
    the dataclass is made (:func:`coerce_fields`).

    Parameters
    ----------
    key : str
        The setting under ``idigdask.``, e.g. ``"build.size"``.

    Returns
    -------
    dataclasses.Field
        A field with that default factory; its ``metadata["setting"]`` is ``key``.

    Examples
    --------
    >>> import dataclasses
    >>> import dask
    >>> import idigdask.config      # registers idigdask's defaults with dask.config
    >>> @dataclasses.dataclass
    ... class Sizes:
    ...     size: int = setting("build.size")
    ...     def __post_init__(self):
    ...         coerce_fields(self)
    >>> with dask.config.set({"idigdask.build.size": "128"}):
    ...     Sizes()
    Sizes(size=128)
    >>> Sizes(size=64)
    Sizes(size=64)
    """

    def default() -> Any:
        from . import config

        return config.get(key)

    return dataclasses.field(default_factory=default, metadata={"setting": key})


def coerce_fields(options: Any) -> None:
    """Convert the fields of a dataclass to their declared types, in place.

    Settings may come from environment variables as text (``"60"``, ``"true"``): each
    field is turned into the type its annotation names, or an :class:`OptionError`
    names the field. Call it from the dataclass's ``__post_init__``.

    Parameters
    ----------
    options : dataclass instance
        Changed in place, even when the dataclass is frozen. ``bool`` fields take
        ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``; tuple fields
        take a comma-separated string; an optional field takes ``None``, ``"none"``,
        ``"null"`` or ``""`` as None.

    Raises
    ------
    OptionError
        For the first field whose value cannot be converted; the message names the
        setting it defaults from, if any.

    Examples
    --------
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Fetch:
    ...     timeout: float = 30.0
    ...     retry: bool = True
    ...     networks: tuple[str, ...] = ()
    ...     def __post_init__(self):
    ...         coerce_fields(self)
    >>> Fetch(timeout="60", retry="no", networks="10.1.2.0/24, fd00::/8")
    Fetch(timeout=60.0, retry=False, networks=('10.1.2.0/24', 'fd00::/8'))
    >>> Fetch(timeout="soon")
    Traceback (most recent call last):
    ...
    idigdask.options.OptionError: timeout: 'soon' is not a float
    """
    hints = typing.get_type_hints(type(options))
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        try:
            converted = _coerce(value, hints[f.name])
        except (TypeError, ValueError):
            where = f"; its default is the setting idigdask.{f.metadata['setting']}" \
                if "setting" in f.metadata else ""
            raise OptionError(f.name, f"{value!r} is not a {_type_name(hints[f.name])}"
                                      f"{where}") from None
        object.__setattr__(options, f.name, converted)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(value)
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) \
            else list(value or ())
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in items)
        if len(items) != len(args):
            raise ValueError(value)
        return tuple(_coerce(v, a) for v, a in zip(items, args))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(value)
        return value
    return value  # nested options and anything else are the dataclass's own to check


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) or str(hint)
    return text.replace("typing.", "").replace("NoneType", "None")


def with_overrides(cls: type[T], options: T | dict | None, overrides: dict[str, Any],
                   nested: dict[str, type] | None = None) -> T:
    """``options`` (an instance of ``cls``, a dict of fields, or None) with ``overrides``.

    ``nested`` names fields that hold options of another stage (``{"fetch":
    FetchOptions}``): an override named as one of their fields goes there, so a call
    can say ``timeout=5`` to a build. An unknown name is an :class:`OptionError`.

    Parameters
    ----------
    cls : type
        The options dataclass.
    options : cls instance, dict or None
        The options a call was given: an instance is kept as it is, a dict is read as
        fields (and nested fields), None gives the defaults.
    overrides : dict
        Field values that replace those of ``options`` (a call's keywords).
    nested : dict, optional
        ``{field name: options class}`` of fields that hold another stage's options.

    Returns
    -------
    cls instance
        A new object when there are overrides (``options`` itself is never changed),
        else ``options``.

    Raises
    ------
    OptionError
        For an override that names no field of ``cls`` nor of a nested class, or a
        value that the dataclass refuses.
    UserError
        When ``options`` is neither a ``cls``, a dict nor None.

    Examples
    --------
    >>> from idigdask.build import BuildOptions
    >>> from idigdask.fetch import FetchOptions
    >>> options = with_overrides(BuildOptions, {"size": 128}, {"timeout": 5},
    ...                          nested={"fetch": FetchOptions})
    >>> options.size, options.fetch.timeout
    (128, 5.0)
    >>> with_overrides(BuildOptions, None, {"colour": "red"})
    Traceback (most recent call last):
    ...
    idigdask.options.OptionError: colour: not an option of BuildOptions
    """
    if options is None:
        options = cls()
    elif isinstance(options, dict):
        options = with_overrides(cls, None, options, nested)
    elif not isinstance(options, cls):
        raise UserError(f"options must be a {cls.__name__}, not {type(options).__name__}")
    if not overrides:
        return options
    own = {f.name for f in dataclasses.fields(cls)}
    mine = {k: v for k, v in overrides.items() if k in own}
    rest = {k: v for k, v in overrides.items() if k not in own}
    for name, sub_cls in (nested or {}).items():
        sub_names = {f.name for f in dataclasses.fields(sub_cls)}
        taken = {k: rest.pop(k) for k in list(rest) if k in sub_names}
        if taken:
            current = mine.get(name, getattr(options, name))
            mine[name] = with_overrides(sub_cls, current, taken)
    if rest:
        name = sorted(rest)[0]
        raise OptionError(name, f"not an option of {cls.__name__}")
    return dataclasses.replace(options, **mine)


def check(options: Any, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Raise an :class:`OptionError` for the first field whose rule fails."""
    for name, (ok, what) in rules.items():
        value = getattr(options, name)
        if not ok(value):
            raise OptionError(name, f"{value!r} is out of range: {what}")
