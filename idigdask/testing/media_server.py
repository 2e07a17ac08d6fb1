"""A loopback HTTP/1.1 media server that can misbehave on purpose.

:class:`MediaServer` serves the files under a folder and a set of fault routes, so that
the fetch stage can be tested, and benchmarked, against a real server that fails in the
ways real media servers do. It binds to 127.0.0.1 only and runs in background threads
(one per connection, with keep-alive).

Routes
------
``/<relpath>``
    The file ``root/<relpath>`` with its Content-Length and Content-Type (``HEAD`` too).
``/fault/status/<code>/<anything>``
    Answers ``<code>`` (e.g. 404, 403, 410, 500) with a short text body.
``/fault/fail/<code>/<n>/<relpath>``
    The first ``<n>`` requests of this URL answer ``<code>`` (e.g. 500 or 503), later
    ones the file. Counters are kept per request target (path and query), so every URL
    fails its own first ``<n>`` requests; ``<n>`` may be ``always``.
``/fault/throttle/<n>/<relpath>[?after=<seconds>]``
    The first ``<n>`` requests answer 429 with ``Retry-After: <seconds>`` (default 1).
``/fault/reset/<n>/<relpath>``
    The first ``<n>`` requests get the headers and half the body, then a TCP reset;
    ``<n>`` may be ``always``.
``/fault/short/<relpath>``
    The full file's Content-Length, then half the body and a clean close.
``/fault/slow/<seconds>/<relpath>``
    Waits ``<seconds>`` before sending the headers, then the file.
``/fault/redirect/<relpath>``
    302 to ``/<relpath>``.
``/fault/chain/<k>/<relpath>``
    ``k`` hops of 302 (through ``/fault/chain/<k-1>/...``) before the file;
    ``/fault/chain/0/<relpath>`` is the file itself.
``/fault/loop/<anything>``
    302 to itself, for ever.
``/fault/goto/<code>?to=<url>``
    ``<code>`` (301, 302, 303, 307 or 308) to ``<url>``, as given: another server's
    URL (another origin), a relative one, or one that should be refused.
``/fault/headers/<anything>``
    200 with the request's headers as a JSON object.
``/fault/html/<anything>``
    200 with an HTML error page (what some portals send instead of an image).
``/fault/huge/<nbytes>``
    200 with ``Content-Length: <nbytes>`` and that many zero bytes, streamed.
``/fault/endless/<anything>``
    200, chunked, no Content-Length, zero bytes until the client goes away.
``/fault/hang/<anything>``
    Reads the request and never answers, until the client leaves or the server closes.

Every route counts its requests in :attr:`MediaServer.requests` and records the request
headers in :attr:`MediaServer.request_log`; :attr:`MediaServer.max_in_flight` is the
largest number of requests that were being answered at the same time.

Examples
--------
>>> with MediaServer(folder) as server:                          # doctest: +SKIP
...     url = server.url_for("fault/fail/503/2/sheet.jpg")
"""

from __future__ import annotations

import collections
import email.utils
import ipaddress
import json
import mimetypes
import os
import select
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["MediaServer"]

_CHUNK = 64 * 1024
_ZEROS = bytes(_CHUNK)
_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service unavailable</title></head>"
    b"<body><h1>The image you asked for cannot be shown right now.</h1></body></html>"
)


class MediaServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving files and fault routes.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Folder whose files are served at ``/<relative path>``. Without it only the
        fault routes that need no file answer; file paths give 404.
    host : str
        Address to bind; only loopback addresses are accepted (``127.0.0.0/8``,
        ``::1``, ``localhost``), so two servers on 127.0.0.1 and 127.0.0.2 are two
        hosts.
    port : int
        Port to bind; 0 picks a free one.

    Notes
    -----
    The server starts in a background thread at construction. Use it as a context
    manager, or call :meth:`close`. See the module docstring for the routes.

    Examples
    --------
    >>> import tempfile
    >>> with MediaServer(tempfile.mkdtemp()) as server:                   # doctest: +SKIP
    ...     server.url
    'http://127.0.0.1:...'
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if not _is_loopback(host):
            raise ValueError(f"MediaServer binds to loopback only, not {host!r}")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.root = Path(root).resolve() if root is not None else None
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._fault_counts: collections.Counter[str] = collections.Counter()
        self._log: collections.deque[tuple[str, dict[str, str]]] = collections.deque(
            maxlen=10_000
        )
        self._connections: set[socket.socket] = set()
        self._in_flight = 0
        self._max_in_flight = 0
        server_class = _Server6 if ":" in self.host else _Server
        self._httpd = server_class((self.host, port), _Handler)
        self._httpd.media = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="media-server",
            daemon=True,
        )
        self._thread.start()

    # -- addresses ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port."""
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash, e.g. ``http://127.0.0.1:40123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, relpath: str) -> str:
        """URL of ``relpath`` (a file or a fault route), percent-encoded."""
        return f"{self.url}/{quote(str(relpath).lstrip('/'), safe='/?=&')}"

    # -- statistics ----------------------------------------------------------------------
    @property
    def requests(self) -> dict[str, int]:
        """Requests seen so far, per path (a snapshot)."""
        with self._lock:
            return dict(self._counts)

    @property
    def request_log(self) -> list[tuple[str, dict[str, str]]]:
        """The latest requests as ``(path, headers)`` pairs, oldest first (a snapshot)."""
        with self._lock:
            return list(self._log)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being answered at the same time."""
        with self._lock:
            return self._max_in_flight

    def reset_stats(self) -> None:
        """Forget request counts, the log, fault counters and ``max_in_flight``."""
        with self._lock:
            self._counts.clear()
            self._fault_counts.clear()
            self._log.clear()
            self._max_in_flight = self._in_flight

    # -- life cycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop serving, wake hanging handlers and close every connection."""
        if self.closing.is_set():
            return
        self.closing.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        # Idle keep-alive handlers block in a read: shutting their sockets wakes them.
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MediaServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MediaServer(root={str(self.root)!r}, url={self.url!r})"

    # -- bookkeeping used by the handler -------------------------------------------------
    def _begin(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._counts[path] += 1
            self._log.append((path, headers))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_fault_count(self, target: str) -> int:
        """How many earlier requests this target had (0 for the first)."""
        with self._lock:
            seen = self._fault_counts[target]
            self._fault_counts[target] += 1
            return seen

    def _register(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _resolve(self, relpath: str) -> Path | None:
        """The file for ``relpath`` under root, or None (missing, outside root)."""
        if self.root is None:
            return None
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    media: MediaServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "idigdask-media-server"
    disable_nagle_algorithm = True  # small responses on keep-alive, no 40 ms stalls
    timeout = 60  # idle keep-alive connections give up after this
    server: _Server

    # -- plumbing ------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.server.media._register(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.media._register(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and benchmarks read the counters instead."""

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        media = self.server.media
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        media._begin(path, dict(self.headers.items()))
        try:
            if path.startswith("/fault/"):
                self._fault(path[len("/fault/") :], parts.query, head)
            else:
                self._send_file(path.lstrip("/"), head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away: nothing to answer
        finally:
            media._end()

    # -- answers -------------------------------------------------------------------------
    def _send_simple(self, code: int, body: bytes = b"", headers: dict | None = None,
                     content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, relpath: str, head: bool = False, cut: str | None = None) -> None:
        """Send a file; ``cut`` is None, ``"short"`` (close early) or ``"reset"``."""
        path = self.server.media._resolve(relpath)
        if path is None:
            self._send_simple(404, f"not found: {relpath}\n".encode())
            return
        data = path.read_bytes()
        self.send_response(200)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        self.end_headers()
        if head:
            return
        if cut is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        if cut == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _fault(self, spec: str, query: str, head: bool) -> None:
        kind, _, rest = spec.partition("/")
        handler = getattr(self, f"_fault_{kind}", None)
        if handler is None:
            self._send_simple(400, f"unknown fault route: {kind}\n".encode())
            return
        try:
            handler(rest, parse_qs(query), head)
        except (ValueError, IndexError, KeyError) as err:
            self._send_simple(400, f"bad fault route /fault/{spec}: {err}\n".encode())

    def _failing(self, count: str) -> bool:
        """Whether this request is one of the first ``count`` of its target."""
        seen = self.server.media._next_fault_count(self.path)
        return count == "always" or seen < int(count)

    def _fault_status(self, rest: str, query: dict, head: bool) -> None:
        code = int(rest.split("/")[0])
        self._send_simple(code, f"status {code}\n".encode())

    def _fault_fail(self, rest: str, query: dict, head: bool) -> None:
        code, count, relpath = rest.split("/", 2)
        if self._failing(count):
            self._send_simple(int(code), f"failing on purpose with {code}\n".encode())
        else:
            self._send_file(relpath, head)

    def _fault_throttle(self, rest: str, query: dict, head: bool) -> None:
        count, relpath = rest.split("/", 1)
        after = query.get("after", ["1"])[0]
        if self._failing(count):
            self._send_simple(429, b"slow down\n", {"Retry-After": after})
        else:
            self._send_file(relpath, head)

    def _fault_reset(self, rest: str, query: dict, head: bool) -> None:
        count, relpath = rest.split("/", 1)
        self._send_file(relpath, head, cut="reset" if self._failing(count) else None)

    def _fault_short(self, rest: str, query: dict, head: bool) -> None:
        self._send_file(rest, head, cut="short")

    def _fault_slow(self, rest: str, query: dict, head: bool) -> None:
        seconds, relpath = rest.split("/", 1)
        if self.server.media.closing.wait(float(seconds)):
            self.close_connection = True
            return
        self._send_file(relpath, head)

    def _fault_redirect(self, rest: str, query: dict, head: bool) -> None:
        self._send_simple(302, b"", {"Location": "/" + quote(rest)})

    def _fault_chain(self, rest: str, query: dict, head: bool) -> None:
        hops, relpath = rest.split("/", 1)
        if int(hops) <= 0:
            self._send_file(relpath, head)
        else:
            location = f"/fault/chain/{int(hops) - 1}/{quote(relpath)}"
            self._send_simple(302, b"", {"Location": location})

    def _fault_loop(self, rest: str, query: dict, head: bool) -> None:
        self._send_simple(302, b"", {"Location": self.path})

    def _fault_goto(self, rest: str, query: dict, head: bool) -> None:
        code = int(rest.split("/")[0])
        if code not in (301, 302, 303, 307, 308):
            raise ValueError(f"{code} is not a redirect")
        self._send_simple(code, b"", {"Location": query["to"][0]})

    def _fault_headers(self, rest: str, query: dict, head: bool) -> None:
        body = json.dumps(dict(self.headers.items())).encode()
        self._send_simple(200, body, content_type="application/json")

    def _fault_html(self, rest: str, query: dict, head: bool) -> None:
        self._send_simple(200, _HTML_PAGE, content_type="text/html; charset=utf-8")

    def _fault_huge(self, rest: str, query: dict, head: bool) -> None:
        nbytes = int(rest.split("/")[0])
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(nbytes))
        self.end_headers()
        if head:
            return
        closing = self.server.media.closing
        while nbytes > 0 and not closing.is_set():
            self.wfile.write(_ZEROS[: min(nbytes, _CHUNK)])
            nbytes -= _CHUNK
        if nbytes > 0:
            self.close_connection = True

    def _fault_endless(self, rest: str, query: dict, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True  # never finished properly
        if head:
            return
        chunk = f"{_CHUNK:x}\r\n".encode() + _ZEROS + b"\r\n"
        closing = self.server.media.closing
        while not closing.is_set():
            self.wfile.write(chunk)

    def _fault_hang(self, rest: str, query: dict, head: bool) -> None:
        self.close_connection = True
        closing = self.server.media.closing
        while not closing.wait(0.05):
            # Leave as soon as the client closes its end (a read gives EOF).
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                return
