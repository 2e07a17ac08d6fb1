"""Fetch media bytes, concurrently and politely, from any fsspec location.

The fetch stage turns URIs into bytes. It never raises for one bad record: each URI
gives a :class:`FetchResult` whose ``status`` is ``"ok"`` or ``"failed"``, with a
``reason`` category the ledger keeps.

* ``http://`` and ``https://`` go through one :class:`aiohttp.ClientSession` per call
  (the library fsspec's HTTP filesystem is built on), with a per-request total timeout,
  redirects, a byte cap while streaming, a Content-Length check, and retries with
  exponential backoff and full jitter on transient failures (connection errors,
  resets, timeouts, 408, 429, 5xx; ``Retry-After`` is honoured). Redirects are
  followed here, hop by hop: each hop's address is checked (no private addresses
  unless allowed, see :class:`FetchOptions`), and the caller's headers, auth and
  cookies never leave the first origin.
* Everything else (``s3://`` on a Ceph RADOS gateway through s3fs, ``file://`` and plain
  paths, ``memory://`` ...) goes through :func:`fsspec.core.url_to_fs` with the
  caller's ``storage_options``. Asynchronous filesystems (s3fs) are awaited directly;
  synchronous ones run in a thread. s3fs is imported by fsspec only when an ``s3://``
  URI is seen. As everywhere in fsspec, ``file://`` paths are taken literally (no
  percent-decoding).

The loop over URIs is one coroutine, run on fsspec's own IO event loop (a daemon
thread), so s3fs filesystems are shared with the rest of fsspec. :func:`fetch_many`
waits for it through :func:`fsspec.asyn.sync`, from any thread, a Dask worker thread
included, whether or not that thread runs an event loop; :func:`fetch_many_async`
awaits it from any loop; :func:`iter_fetch` takes results from it as they complete,
starting a new request only when the caller has taken a result, so decoding overlaps
fetching with bounded memory.

Reasons
-------
``timeout``, ``connection``, ``http_<code>`` for 4xx (``http_404``, ``http_403``,
``http_410``, ``http_429`` ...), ``http_5xx`` for every 5xx, ``too_large``,
``redirect_loop`` (too many redirects), ``truncated`` (body shorter than its
Content-Length, or cut mid-body), ``private_address`` (an http(s) URL, or one of its
redirects, reaches an address that :class:`FetchOptions`' ``allow_private`` keeps out),
``not_found`` and ``access_denied`` (files and object stores), ``error`` (anything
else).

Schemes and redaction live in :mod:`idigdask.urls`; :func:`classify_scheme` and
:func:`redact` are importable from here as well.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import inspect
import os
import queue
import random
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import fsspec
import fsspec.asyn
import fsspec.core
import yarl

from . import __version__
from .errors import UserError
from .options import check, coerce_fields, setting
from .urls import (
    HTTP_SCHEMES,
    LOCAL_SCHEMES,
    AddressPolicy,
    classify_scheme,
    literal_address,
    redact,
    secret_values,
)

__all__ = [
    "FetchOptions",
    "FetchResult",
    "classify_scheme",
    "fetch_many",
    "fetch_many_async",
    "iter_fetch",
    "redact",
]

_BACKOFF_CAP = 30.0  # seconds: the longest pause between two tries
_RETRY_AFTER_CAP = 60.0  # seconds: a server may not park a request for longer
_CHUNK = 256 * 1024
# Request keywords that fsspec's HTTP filesystem forwards to aiohttp as well: who the
# caller is (sent to the first origin only) and how to connect (sent on every hop).
_IDENTITY_KEYS = ("headers", "auth", "cookies")
_TRANSPORT_KEYS = ("ssl", "proxy", "proxy_auth")
_REDIRECT_CODES = (301, 302, 303, 307, 308)


# ----------------------------------------------------------------------------- options
@dataclass
class FetchOptions:
    """How to fetch: timeouts, retries, politeness and limits.

    Parameters
    ----------
    timeout : float
        Seconds allowed for one try, from sending the request to the last body byte
        (time spent waiting for a free connection slot does not count).
    retries : int
        Further tries after a transient failure (so at most ``retries + 1`` tries).
    backoff : float
        Base of the exponential backoff in seconds; each pause is drawn uniformly
        from ``[0, min(30, backoff * 2**(try - 1))]`` (full jitter).
    concurrency : int
        Requests in flight at once per call.
    per_host : int
        Requests in flight at once per host (per protocol for object stores).
    max_bytes : int
        Largest body accepted; bigger ones fail with ``too_large``.
    user_agent : str
        The ``User-Agent`` header of HTTP requests.
    storage_options : dict, optional
        Options for the filesystems, as fsspec takes them: for ``s3`` ``key``,
        ``secret``, ``client_kwargs={"endpoint_url": ...}``; for ``http(s)``
        ``headers``, ``auth``, ``ssl``, ``proxy`` and ``client_kwargs`` (given to
        :class:`aiohttp.ClientSession`; keys it does not take are left out, as they
        belong to another protocol). A dict whose keys are all protocol names, e.g.
        ``{"s3": {...}, "https": {...}}``, gives each protocol its own options.
    max_redirects : int
        Redirects followed before failing with ``redirect_loop``. Every hop is checked
        like the first URL; on a hop to another origin (scheme, host, port) the
        caller's headers, auth and cookies from ``storage_options`` are dropped, for
        the rest of the chain.
    allow_private : bool
        Fetch ``http(s)`` media from loopback, link-local (the cloud metadata
        address), private, shared, multicast, reserved and unspecified addresses
        (:data:`idigdask.urls.PRIVATE_NETWORKS`). Off by default: a catalog may come
        from a stranger, and its URLs, or their redirects, could make the workers read
        services of their own network; such a URL fails with ``private_address``.
        Checked after DNS resolution, on the addresses connected to, and on every
        redirect hop. ``s3://`` and ``file://`` are not checked (their endpoint is the
        caller's). Default: the dask config ``idigdask.fetch.allow-private``
        (``DASK_IDIGDASK__FETCH__ALLOW_PRIVATE=true``).
    allow_networks : tuple of str
        Networks fetched from even though private (``"10.1.2.0/24"``, one address),
        e.g. a Ceph gateway's; the rest stay refused. Default: the dask config
        ``idigdask.fetch.allow-networks``.

    Notes
    -----
    Through an HTTP proxy (``storage_options={"proxy": ...}``) the proxy resolves the
    names, so only URLs that spell an address are checked; the proxy's own address is
    the caller's choice and is not.

    Examples
    --------
    >>> from idigdask import FetchOptions
    >>> FetchOptions(timeout=10, retries=2).timeout
    10.0
    """

    timeout: float = setting("fetch.timeout")
    retries: int = setting("fetch.retries")
    backoff: float = setting("fetch.backoff")
    concurrency: int = setting("fetch.concurrency")
    per_host: int = setting("fetch.per-host")
    max_bytes: int = setting("fetch.max-bytes")
    user_agent: str = f"idigdask/{__version__} (+https://github.com/idigdask)"
    storage_options: dict | None = None
    max_redirects: int = setting("fetch.max-redirects")
    allow_private: bool = setting("fetch.allow-private")
    allow_networks: tuple[str, ...] = setting("fetch.allow-networks")

    def __post_init__(self) -> None:
        if isinstance(self.allow_networks, str) and "," not in self.allow_networks:
            self.allow_networks = (self.allow_networks,)
        coerce_fields(self)
        check(self, {
            "timeout": (lambda v: v > 0, "more than 0 seconds"),
            "retries": (lambda v: v >= 0, "0 or more"),
            "backoff": (lambda v: v >= 0, "0 or more seconds"),
            "concurrency": (lambda v: v >= 1, "at least 1"),
            "per_host": (lambda v: v >= 1, "at least 1"),
            "max_bytes": (lambda v: v >= 1, "at least 1"),
            "max_redirects": (lambda v: v >= 0, "0 or more"),
        })
        self.policy()  # a network that is not one is the caller's mistake

    def policy(self) -> AddressPolicy:
        """The :class:`~idigdask.urls.AddressPolicy` of ``allow_private`` and ``allow_networks``."""
        try:
            return AddressPolicy(self.allow_private, self.allow_networks)
        except ValueError as err:
            raise UserError(f"fetch option allow_networks: {err}") from None

    def options_for(self, protocol: str) -> dict:
        """The storage options that apply to ``protocol``."""
        so = self.storage_options or {}
        if so and all(key in _protocol_names() for key in so):
            aliases = {"https": "http", "s3a": "s3", "local": "file"}
            return dict(so.get(protocol) or so.get(aliases.get(protocol, ""), None) or {})
        return dict(so)


@dataclass
class FetchResult:
    """What fetching one URI gave.

    Attributes
    ----------
    uri : str
        The URI as given (not redacted: pass it through :func:`redact` before logging).
    data : bytes or None
        The body, or None when the fetch failed.
    status : {"ok", "failed"}
    reason : str or None
        The failure category (see the module docstring), None when ok.
    message : str or None
        A human-readable explanation, with credentials redacted.
    attempts : int
        Tries made (1 when the first one settled it).
    nbytes : int
        ``len(data)``, 0 when failed.
    seconds : float
        Wall time from the first try to the result, pauses included.

    Examples
    --------
    >>> result = FetchResult("https://example.org/a.jpg", b"\\xff\\xd8", "ok",
    ...                      attempts=1, nbytes=2)
    >>> result.ok, result.reason
    (True, None)
    >>> FetchResult("https://example.org/b.jpg", None, "failed", reason="not_found").ok
    False
    """

    uri: str
    data: bytes | None
    status: Literal["ok", "failed"]
    reason: str | None = None
    message: str | None = None
    attempts: int = 0
    nbytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the bytes arrived."""
        return self.status == "ok"


class _Failure(Exception):
    """One try failed; ``transient`` says whether another try may help."""

    def __init__(
        self, reason: str, message: str, transient: bool, retry_after: float | None = None
    ):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


class _RefusedAddress(OSError):
    """A host resolved to an address that the :class:`AddressPolicy` refuses."""

    def __init__(self, host: str, address: str, why: str):
        super().__init__(f"{host} resolves to {address}, {why}")
        self.host, self.address, self.why = host, address, why


class _CheckedResolver(aiohttp.abc.AbstractResolver):
    """Resolves names, then refuses every answer that the policy refuses.

    aiohttp connects to exactly the addresses a resolver gives, so checking them here
    leaves no time between check and connect for DNS to change its answer (rebinding).
    """

    def __init__(self, policy: AddressPolicy, exempt: frozenset[str] = frozenset(),
                 inner: aiohttp.abc.AbstractResolver | None = None):
        self._policy = policy
        self._exempt = exempt  # hosts the caller chose, e.g. an HTTP proxy
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        answers = await self._inner.resolve(host, port, family)
        if host.lower() not in self._exempt:
            for answer in answers:
                why = self._policy.refusal(answer["host"])
                if why:
                    raise _RefusedAddress(host, answer["host"], why)
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _protocol_names() -> set[str]:
    return set(fsspec.available_protocols()) | {"file", "local", "http", "https", "s3", "s3a"}


# -------------------------------------------------------------------- the fetcher
class _Fetcher:
    """Fetches single URIs with retries; holds the per-call session and limits."""

    def __init__(self, options: FetchOptions):
        self.options = options
        self._secrets = secret_values(options.storage_options)
        self._policy = options.policy()
        self._all = asyncio.Semaphore(options.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._filesystems: dict[tuple[str, str], Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._identity: dict[str, Any] = {}
        self._transport: dict[str, Any] = {}

    async def close(self) -> None:
        """Nothing to close: the HTTP session outlives the call (:func:`_shared_session`)."""

    async def fetch(self, uri: str) -> FetchResult:
        """Fetch one URI, retrying transient failures; never raises for the URI."""
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await self._attempt(uri)
            except _Failure as err:
                failure = err
            except UserError:
                raise  # concerns the whole call, not this URI
            except Exception as err:  # an unforeseen error still ends as this URI's failure
                failure = _Failure("error", f"{_describe(err)} for {uri}", False)
            else:
                return FetchResult(uri, data, "ok", None, None, attempt, len(data),
                                   time.monotonic() - start)
            if failure.transient and attempt <= self.options.retries:
                await asyncio.sleep(self._pause(attempt, failure.retry_after))
                continue
            message = redact(failure.message, self._secrets)
            return FetchResult(uri, None, "failed", failure.reason, message, attempt, 0,
                               time.monotonic() - start)

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _RETRY_AFTER_CAP)
        return random.uniform(0.0, min(_BACKOFF_CAP, self.options.backoff * 2 ** (attempt - 1)))

    def _host_limit(self, uri: str, scheme: str) -> asyncio.Semaphore | None:
        if scheme in LOCAL_SCHEMES:
            return None  # local reads are bounded by ``concurrency`` alone
        key = scheme
        if scheme in HTTP_SCHEMES:
            parts = urlsplit(uri)
            key = f"{scheme}://{(parts.hostname or '').lower()}:{parts.port}"
        if key not in self._hosts:
            self._hosts[key] = asyncio.Semaphore(self.options.per_host)
        return self._hosts[key]

    async def _attempt(self, uri: str) -> bytes:
        """One try: wait for a slot (host first, so one busy host blocks no other)."""
        scheme = classify_scheme(uri)
        try:
            host = self._host_limit(uri, scheme)
        except ValueError as err:  # e.g. a port that is not a number
            raise _Failure("error", f"bad URL {uri}: {err}", False) from err
        async with host if host is not None else contextlib.nullcontext(), self._all:
            try:
                async with asyncio.timeout(self.options.timeout):
                    if scheme in HTTP_SCHEMES:
                        return await self._http(uri)
                    return await self._fsspec(uri, scheme)
            except TimeoutError as err:
                raise self._timeout_failure(uri) from err

    def _timeout_failure(self, uri: str) -> _Failure:
        message = f"no complete answer within {self.options.timeout:g} s for {uri}"
        return _Failure("timeout", message, True)

    # ------------------------------------------------------------------------- http
    def _http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            options = self.options.options_for("http")
            accepted = inspect.signature(aiohttp.ClientSession).parameters
            client_kwargs = {k: v for k, v in (options.get("client_kwargs") or {}).items()
                             if k in accepted and k not in ("connector", "timeout")}
            # the caller's identity goes with each request, never with the session, so
            # that a redirect to another origin can leave it behind
            self._identity = _identity(client_kwargs, options)
            self._transport = {k: options[k] for k in _TRANSPORT_KEYS if k in options}
            self._session = _shared_session(self.options, client_kwargs, self._transport)
        return self._session

    async def _http(self, uri: str) -> bytes:
        session = self._http_session()
        try:
            return await self._follow(session, _as_url(uri), uri)
        except TimeoutError as err:
            raise self._timeout_failure(uri) from err
        except aiohttp.ClientPayloadError as err:
            raise _Failure("truncated", f"{_describe(err)} for {uri}", True) from err
        except aiohttp.InvalidURL as err:
            raise _Failure("error", f"invalid URL {uri}", False) from err
        except (aiohttp.ClientConnectionError, ConnectionError) as err:
            raise _Failure("connection", f"{_describe(err)} for {uri}", True) from err
        except (aiohttp.ClientError, ValueError) as err:
            raise _Failure("error", f"{_describe(err)} for {uri}", False) from err

    async def _follow(self, session: aiohttp.ClientSession, url: yarl.URL, uri: str) -> bytes:
        """GET ``url``, following redirects here, so that every hop is checked."""
        identity, origin = self._identity, _origin(url)
        for hop in range(self.options.max_redirects + 1):
            self._check_literal(url, uri, hop)
            try:
                async with session.get(url, allow_redirects=False, **self._transport,
                                       **identity) as response:
                    target = _redirect_target(response)
                    if target is None:
                        if not 200 <= response.status < 300:
                            raise _status_failure(response, uri)
                        return await self._read_body(response, uri)
            except aiohttp.ClientConnectorError as err:
                if isinstance(err.os_error, _RefusedAddress):
                    refused = err.os_error
                    raise _refused(uri, url if hop else None, refused.host, refused.address,
                                   refused.why) from err
                raise
            if target.scheme not in HTTP_SCHEMES:
                raise _Failure("error", f"redirect from {uri} to a URL that is not http(s): "
                               f"{target}", False)
            if _origin(target) != origin:
                identity = {}  # for the first origin only, even if the chain comes back
            url = target
        raise _Failure("redirect_loop", f"more than {self.options.max_redirects} redirects "
                       f"from {uri}", False)

    def _check_literal(self, url: yarl.URL, uri: str, hop: int) -> None:
        """Refuse a URL whose host spells a refused address (aiohttp resolves no such host)."""
        address = literal_address(url.raw_host)
        why = self._policy.refusal(address) if address is not None else None
        if why:
            raise _refused(uri, url if hop else None, url.raw_host or "", str(address), why)

    async def _read_body(self, response: aiohttp.ClientResponse, uri: str) -> bytes:
        """Stream the body up to ``max_bytes``; check it against Content-Length."""
        cap = self.options.max_bytes
        length = response.content_length
        if length is not None and length > cap:
            response.close()  # do not drain a huge body just to reuse the connection
            message = f"Content-Length {length} > max_bytes {cap} for {uri}"
            raise _Failure("too_large", message, False)
        chunks, size = [], 0
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    response.close()
                    raise _Failure("too_large", f"body exceeds max_bytes {cap} for {uri}", False)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as err:
            if isinstance(err, TimeoutError):
                raise
            message = f"{_describe(err)} after {size} bytes for {uri}"
            raise _Failure("truncated", message, True) from err
        # With a Content-Encoding the length counts compressed bytes: aiohttp checks it.
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        encoded = encoding not in ("", "identity")
        if length is not None and not encoded and size != length:
            raise _Failure("truncated", f"got {size} of {length} bytes for {uri}", True)
        return b"".join(chunks)

    # ----------------------------------------------------------------------- fsspec
    def _filesystem(self, uri: str, scheme: str) -> tuple[Any, str]:
        """The filesystem for ``uri`` (cached per protocol and URL options) and path."""
        try:
            if "::" in uri:
                return fsspec.core.url_to_fs(uri, **self.options.options_for(scheme))
            cls = fsspec.get_filesystem_class(scheme)
            key = (scheme, repr(sorted(cls._get_kwargs_from_urls(uri).items())))
            if key not in self._filesystems:
                options = self.options.options_for(scheme)
                self._filesystems[key] = fsspec.core.url_to_fs(uri, **options)[0]
            fs = self._filesystems[key]
            return fs, fs._strip_protocol(uri)
        except ImportError as err:
            extra = " (pip install 'idigdask[s3]')" if scheme in ("s3", "s3a") else ""
            message = f"{scheme}:// URIs need a package that is missing: {err}{extra}"
            raise UserError(message) from err
        except TypeError as err:
            raise UserError(f"storage_options do not fit the {scheme} filesystem: "
                            f"{redact(err, self._secrets)}") from err
        except ValueError as err:  # an unknown protocol: a bad record, not a bad run
            raise _Failure("error", f"{_describe(err)} for {uri}", False) from err

    async def _fsspec(self, uri: str, scheme: str) -> bytes:
        fs, path = self._filesystem(uri, scheme)
        try:
            if fs.async_impl:
                self._check_size((await fs._info(path)).get("size"), uri)
                data = await fs._cat_file(path)
            else:
                data = await asyncio.to_thread(self._read_sync, fs, path, uri)
        except _Failure:
            raise
        except FileNotFoundError as err:
            raise _Failure("not_found", f"{_describe(err)} for {uri}", False) from err
        except PermissionError as err:
            raise _Failure("access_denied", f"{_describe(err)} for {uri}", False) from err
        except IsADirectoryError as err:
            raise _Failure("error", f"a folder, not a file: {uri}", False) from err
        except Exception as err:  # every other error is classified, none is dropped
            raise _classify_store_error(err, uri) from err
        self._check_size(len(data), uri)
        return data

    def _read_sync(self, fs: Any, path: str, uri: str) -> bytes:
        self._check_size(fs.info(path).get("size"), uri)
        return fs.cat_file(path)

    def _check_size(self, size: int | None, uri: str) -> None:
        if size is not None and size > self.options.max_bytes:
            raise _Failure("too_large", f"{size} bytes > max_bytes {self.options.max_bytes} "
                           f"for {uri}", False)


_PRINTABLE_RE = re.compile(r"[!-~]+")


#: HTTP sessions by their settings, on fsspec's IO loop: one per worker process and
#: settings, so the tasks of a build reuse its connections (keep-alive) instead of
#: opening new ones for every batch.
_SESSIONS: dict[str, aiohttp.ClientSession] = {}


def _shared_session(options: FetchOptions, client_kwargs: dict[str, Any],
                    transport: dict[str, Any]) -> aiohttp.ClientSession:
    """The session of these settings, made on first use (only on fsspec's IO loop).

    Its connector sets no limits of its own: each call bounds its requests in flight
    (``concurrency``, ``per_host``) with its own semaphores, as it did with a session
    of its own. The address policy lives in the session's resolver, so it is part of
    the key, with everything else that shapes the session.
    """
    from dask.base import tokenize

    key = tokenize(options.policy(), client_kwargs, transport.get("proxy"),
                   options.timeout, options.user_agent)
    session = _SESSIONS.get(key)
    if session is None or session.closed or session._loop is not asyncio.get_running_loop():
        proxy = transport.get("proxy")
        exempt = frozenset({(yarl.URL(str(proxy)).host or "").lower()} if proxy else ())
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0,
                                         resolver=_CheckedResolver(options.policy(), exempt))
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=options.timeout),
            headers={"User-Agent": options.user_agent},
            **client_kwargs,
        )
        _SESSIONS[key] = session
    return session


async def _close_sessions() -> None:
    sessions = list(_SESSIONS.values())
    _SESSIONS.clear()
    for session in sessions:
        await session.close()


def close_sessions() -> None:
    """Close the shared HTTP sessions of this process (at exit, or to drop connections)."""
    loop = fsspec.asyn.loop[0] if fsspec.asyn.loop else None
    if _SESSIONS and loop is not None and loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close_sessions(), loop).result(5)


atexit.register(close_sessions)
# a forked child has a loop of its own; the parent's sessions belong to the parent
os.register_at_fork(after_in_child=_SESSIONS.clear)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _as_url(text: str) -> yarl.URL:
    # An already valid URL is sent byte for byte, so signed query strings survive.
    return yarl.URL(text, encoded=bool(_PRINTABLE_RE.fullmatch(text)))


def _identity(client_kwargs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The caller's headers, auth and cookies, taken out of ``client_kwargs``.

    Per-request options (``storage_options``) win over the session's
    (``client_kwargs``), as they would in aiohttp.
    """
    session = {k: client_kwargs.pop(k) for k in _IDENTITY_KEYS if k in client_kwargs}
    identity: dict[str, Any] = {}
    for key in ("headers", "cookies"):
        merged = {**dict(session.get(key) or {}), **dict(options.get(key) or {})}
        if merged:
            identity[key] = merged
    auth = options.get("auth") or session.get("auth")
    if auth is not None and hasattr(auth, "encode"):
        # as a header (aiohttp 3.14 deprecates auth=): one rule drops every header
        identity["headers"] = {**identity.get("headers", {}), "Authorization": auth.encode()}
    elif auth is not None:
        identity["auth"] = auth
    return identity


def _origin(url: yarl.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default one when none is written): a URL's origin."""
    return url.scheme.lower(), (url.host or "").lower(), url.port


def _redirect_target(response: aiohttp.ClientResponse) -> yarl.URL | None:
    """Where a redirect answer points, resolved against its URL; None if it is none."""
    location = response.headers.get("Location")
    if response.status not in _REDIRECT_CODES or not location:
        return None
    return response.url.join(_as_url(location)).with_fragment(None)


def _refused(uri: str, hop: yarl.URL | None, host: str, address: str, why: str) -> _Failure:
    """The failure of a URL, or of a redirect ``hop`` from it, that reaches ``address``."""
    where = uri if hop is None else f"{hop} (a redirect from {uri})"
    what = address if host.strip("[]") == address else f"{host}, which resolves to {address}"
    message = (f"refused to fetch {where}: {what} is {why}; the fetch options "
               "allow_private and allow_networks let such addresses be fetched")
    return _Failure("private_address", message, False)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_failure(response: aiohttp.ClientResponse, uri: str) -> _Failure:
    code = response.status
    message = f"HTTP {code} {response.reason or ''} for {uri}".replace("  ", " ")
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if code >= 500:
        return _Failure("http_5xx", message, True, retry_after)
    if code in (408, 429):
        return _Failure(f"http_{code}", message, True, retry_after)
    return _Failure(f"http_{code}", message, False)


# botocore error codes, as s3fs keeps them in the exception's cause
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                 "ExpiredToken", "InvalidToken", "AccountProblem", "403", "Forbidden"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "TooManyRequests", "TooManyRequestsException", "RequestThrottled"}
_SERVER_CODES = {"InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500"}
_TIMEOUT_NAMES = {"ConnectTimeoutError", "ReadTimeoutError", "TimeoutError", "FSTimeoutError"}
_CONNECTION_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ClientConnectionError",
                     "ConnectionError", "HTTPClientError", "ServerDisconnectedError"}
_TRUNCATED_NAMES = {"ClientPayloadError", "IncompleteRead", "ResponseStreamingError",
                    "IncompleteReadError"}


def _classify_store_error(err: BaseException, uri: str) -> _Failure:
    """A failure category for an object-store (s3fs/botocore) or other fsspec error."""
    chain, seen = [], err
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    code, status = None, None
    for item in chain:
        response = getattr(item, "response", None)
        if isinstance(response, dict):
            code = code or (response.get("Error") or {}).get("Code")
            status = status or (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    names = {cls.__name__ for item in chain for cls in type(item).__mro__}
    message = f"{_describe(err)} for {uri}"
    if code in _NOT_FOUND_CODES or status == 404:
        return _Failure("not_found", message, False)
    if code in _DENIED_CODES or status == 403:
        return _Failure("access_denied", message, False)
    # S3 throttles with 503 SlowDown: the status, when known, names the category.
    if status == 429 or (status is None and code in _THROTTLE_CODES):
        return _Failure("http_429", message, True)
    if code in _SERVER_CODES | _THROTTLE_CODES or (status or 0) >= 500:
        return _Failure("http_5xx", message, True)
    if names & _TIMEOUT_NAMES:
        return _Failure("timeout", message, True)
    if names & _TRUNCATED_NAMES:
        return _Failure("truncated", message, True)
    if names & _CONNECTION_NAMES:
        return _Failure("connection", message, True)
    if status is not None and 400 <= status < 500:
        return _Failure(f"http_{status}", message, status == 408)
    return _Failure("error", message, False)


# ---------------------------------------------------------------------- running
async def _fetch_each(
    uris: Sequence[str],
    options: FetchOptions,
    window: asyncio.Semaphore,
    emit: Callable[[int, FetchResult], None],
) -> None:
    """Fetch every URI, handing each ``(index, result)`` to ``emit`` as it completes.

    The one loop over URIs, run on fsspec's IO loop by every entry point. A fetch
    starts once it holds a slot of ``window``, and whoever receives the result gives
    the slot back: so the consumer decides how many results are in flight or waiting.
    """
    fetcher = _Fetcher(options)

    async def one(index: int, uri: str) -> None:
        emit(index, await fetcher.fetch(uri))

    try:
        async with asyncio.TaskGroup() as group:
            for index, uri in enumerate(uris):
                await window.acquire()
                group.create_task(one(index, str(uri)))
    except BaseExceptionGroup as errors:
        # A task only raises for a mistake that concerns the whole call (UserError).
        raise errors.exceptions[0] from None
    finally:
        await fetcher.close()


def _blocking_loop() -> asyncio.AbstractEventLoop:
    """fsspec's IO loop, for a call that will wait on it (never from the loop itself)."""
    loop = fsspec.asyn.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # the usual case: a plain or Dask worker thread
        running = None
    if running is loop:
        raise RuntimeError("fetch_many cannot block fsspec's IO loop; await fetch_many_async")
    return loop


async def fetch_many_async(
    uris: Sequence[str], options: FetchOptions | None = None
) -> list[FetchResult]:
    """Fetch ``uris`` concurrently; the results come in the order of ``uris``.

    Parameters
    ----------
    uris : sequence of str
        URLs or paths (http, https, s3, file, memory ... or plain paths).
    options : FetchOptions, optional
        Limits, retries and storage options; defaults if None.

    Returns
    -------
    list of FetchResult
        One per URI, same order. A failed URI gives ``status="failed"``, never an
        exception.

    Raises
    ------
    UserError
        When the options cannot work at all (storage options that a filesystem does
        not take, a protocol whose package is not installed).

    Notes
    -----
    The requests run on fsspec's IO loop; awaited from another loop, this coroutine
    waits for them without blocking its own loop, and its cancellation cancels them.

    Examples
    --------
    >>> import asyncio
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/fetch-doc/a.jpg", b"\\xff\\xd8\\xff")
    >>> uris = ["memory://fetch-doc/a.jpg", "memory://fetch-doc/missing.jpg"]
    >>> results = asyncio.run(fetch_many_async(uris))
    >>> [(r.status, r.reason, r.nbytes) for r in results]
    [('ok', None, 3), ('failed', 'not_found', 0)]
    """
    options = options or FetchOptions()
    uris = list(uris)
    loop = fsspec.asyn.get_loop()
    if asyncio.get_running_loop() is not loop:  # s3fs and the like belong to that loop
        on_loop = asyncio.run_coroutine_threadsafe(fetch_many_async(uris, options), loop)
        return await asyncio.wrap_future(on_loop)
    results: list[FetchResult | None] = [None] * len(uris)
    window = asyncio.Semaphore(4 * options.concurrency)  # bounds the tasks alive at once

    def emit(index: int, result: FetchResult) -> None:
        results[index] = result
        window.release()

    await _fetch_each(uris, options, window, emit)
    return results  # type: ignore[return-value]  # every slot was filled


def fetch_many(uris: Sequence[str], options: FetchOptions | None = None) -> list[FetchResult]:
    """Fetch ``uris`` concurrently and wait for all of them (a blocking call).

    Safe to call from any thread, e.g. a Dask worker thread, with or without an event
    loop of its own: it runs :func:`fetch_many_async` on fsspec's IO loop through
    :func:`fsspec.asyn.sync`. See :func:`fetch_many_async` for parameters and results.

    Examples
    --------
    >>> results = fetch_many(["/data/a.jpg", "https://example.org/b.jpg"],
    ...                      FetchOptions(timeout=10, retries=2))   # doctest: +SKIP
    >>> [r.reason for r in results if not r.ok]                    # doctest: +SKIP
    """
    uris = list(uris)
    if not uris:
        return []
    options = options or FetchOptions()  # read here: the config is the caller's
    return fsspec.asyn.sync(_blocking_loop(), fetch_many_async, uris, options)


def iter_fetch(
    uris: Sequence[str], options: FetchOptions | None = None, *, buffer: int | None = None
) -> Iterator[tuple[int, FetchResult]]:
    """Yield ``(index, result)`` pairs as fetches complete, in completion order.

    The requests run on fsspec's IO loop while the caller works on what it got, so
    decoding overlaps fetching. At most ``concurrency + buffer`` results are in flight
    or waiting to be taken, which bounds memory: a new request starts only when the
    caller has taken a result.

    Parameters
    ----------
    uris : sequence of str
        URLs or paths.
    options : FetchOptions, optional
        As for :func:`fetch_many`.
    buffer : int, optional
        Finished results that may wait for the caller; defaults to ``concurrency``.

    Yields
    ------
    tuple of (int, FetchResult)
        The position of the URI in ``uris`` and its result.

    Notes
    -----
    Fetching starts at the first ``next()``. Closing the iterator early (``break``,
    garbage collection) cancels the requests still running.

    Raises
    ------
    UserError
        As for :func:`fetch_many_async`, when the options cannot work at all.
    RuntimeError
        When called from fsspec's IO loop itself.

    Examples
    --------
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/iter-doc/a.jpg", b"\\xff\\xd8\\xff")
    >>> uris = ["memory://iter-doc/a.jpg", "memory://iter-doc/missing.jpg"]
    >>> sorted((i, r.status, r.reason) for i, r in iter_fetch(uris))
    [(0, 'ok', None), (1, 'failed', 'not_found')]
    """
    options = options or FetchOptions()
    uris = list(uris)
    if not uris:
        return
    buffer = options.concurrency if buffer is None else max(0, buffer)
    loop = _blocking_loop()
    window = asyncio.Semaphore(options.concurrency + buffer)
    # Results cross from the loop to this thread in a queue; None marks the end.
    taken: queue.SimpleQueue[tuple[int, FetchResult] | None] = queue.SimpleQueue()
    running = asyncio.run_coroutine_threadsafe(
        _fetch_each(uris, options, window, lambda index, result: taken.put((index, result))),
        loop)
    running.add_done_callback(lambda _: taken.put(None))  # after the last result put
    try:
        while (item := taken.get()) is not None:
            yield item
            loop.call_soon_threadsafe(window.release)  # taken: one more fetch may start
        running.result()  # raises what stopped the fetch (a UserError), if anything
    finally:
        running.cancel()  # closed early: what is still in flight stops
