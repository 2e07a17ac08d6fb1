"""What a URL is: its scheme, the addresses it may reach, and its text without secrets.

Pure functions over strings and addresses (the standard library only, no aiohttp), so
every stage that writes a URL down (ledger, logs, errors, store attributes) and the
fetcher that connects to one share the same rules.

* :func:`classify_scheme` names the protocol of a URI (plain paths are ``file``).
* :func:`redact` removes credentials from a URL or any message.
* :class:`AddressPolicy` says which IP addresses a media URL may reach: by default no
  loopback, link-local (the cloud metadata service), private, shared, multicast,
  reserved or unspecified address, in any spelling (:func:`literal_address`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HTTP_SCHEMES",
    "LOCAL_SCHEMES",
    "REMOTE_SCHEMES",
    "PRIVATE_NETWORKS",
    "AddressPolicy",
    "classify_scheme",
    "is_secret_name",
    "literal_address",
    "redact",
    "secret_values",
]

#: Schemes fetched with aiohttp (and checked against the :class:`AddressPolicy`).
HTTP_SCHEMES = ("http", "https")
#: Schemes fetched from servers: http(s) and object stores; always allowed.
REMOTE_SCHEMES = (*HTTP_SCHEMES, "s3")
#: Schemes that read the machine's own files or memory (fetched only with ``allow_local``).
LOCAL_SCHEMES = ("file", "local", "memory")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ----------------------------------------------------------------------------- schemes
def classify_scheme(uri: str) -> str:
    """The protocol of ``uri``: ``"http"``, ``"https"``, ``"s3"``, ``"file"``, ...

    Plain paths are ``"file"``; a chained URL (``simplecache::s3://...``) gives its
    outermost protocol.

    Examples
    --------
    >>> classify_scheme("https://api.idigbio.org/v2/media/abc")
    'https'
    >>> classify_scheme("/data/sheet.jpg")
    'file'
    """
    first, chained, _ = str(uri).partition("::")
    match = (_CHAIN_RE if chained else _SCHEME_RE).match(first)
    if match is None and not chained:
        # "javascript:...", "data:...", "search:{...}" name a scheme without "//"; one
        # letter before the colon is a Windows drive ("C:\\sheets\\a.jpg"), a path
        match = _OPAQUE_RE.match(first)
    return match.group(1).lower() if match else "file"


_SCHEME_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://")
_CHAIN_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)(?:://|$)")
_OPAQUE_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]+):(?!//)")


# --------------------------------------------------------------------------- redaction
_REDACTED = "REDACTED"

# Names whose value is a credential, compared lower-cased: whole names ...
_SECRET_EXACT = frozenset({
    "key", "sig", "pwd", "pass", "auth", "policy", "sid", "otp", "cookie", "set-cookie",
    "awsaccesskeyid", "x-goog-signature", "x-goog-credential",
})
# ... and parts of names (access_token, X-Amz-Security-Token, client_secret, ...)
_SECRET_PARTS = (
    "token", "secret", "passw", "signature", "credential", "apikey", "api_key", "api-key",
    "accesskey", "access_key", "access-key", "privatekey", "private_key", "session",
    "sessid", "jwt", "authoriz",
)
# ... and names ending in a key or auth word: subscription-key, x-auth, client_key
_SECRET_SUFFIX_RE = re.compile(r"[_.-](?:key|auth|sig|pass)$")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a query parameter, header or field called ``name`` holds a credential.

    Case-insensitive. Covers ``token``, ``access_token``, ``id_token``, ``api_key``,
    ``api-key``, ``apikey``, ``key``, ``secret``, ``signature``, ``sig``, ``password``,
    ``passwd``, ``pwd``, ``jwt``, ``session``, ``sessionid``, ``auth``, the signed-URL
    parameters of S3 (``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token``, ``AWSAccessKeyId``, ``Signature``), Google Cloud Storage
    and Azure (``sig``), and headers such as ``Authorization``, ``Cookie`` and
    ``X-Api-Key``.

    Examples
    --------
    >>> is_secret_name("X-Amz-Signature"), is_secret_name("size")
    (True, False)
    """
    lowered = name.lower()
    return (lowered in _SECRET_EXACT or any(part in lowered for part in _SECRET_PARTS)
            or bool(_SECRET_SUFFIX_RE.search(lowered)))


# A URL: a scheme, "//", then everything up to white space or a quote.
_URL_RE = re.compile(r"\b(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s\"'<>`]+)")
# Header lines whose whole value is a credential.
_HEADER_RE = re.compile(
    r"(?P<name>\b(?:proxy-)?(?:authorization|cookie|set-cookie)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\r\n\"']+", re.I)
_BEARER_RE = re.compile(r"\b(?P<name>bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I)
# A JSON Web Token anywhere: three base64url parts, the first a JSON object.
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
# name=value: query strings (URL-encoded ones too), keyword arguments in a repr
_PARAM_RE = re.compile(r"(?:(?<![\w.-])|(?<=%3[fF])|(?<=%26))(?P<name>[A-Za-z_][\w.-]*)"
                       r"(?:=|%3[dD])")
_PARAM_VALUE_RE = re.compile(rf"{_QUOTED}|(?:(?!%26)[^&\s#\"'<>,;)])*")
# name: value: JSON, a dict's repr, YAML, header lines (never a URL's "host:port")
_FIELD_RE = re.compile(r"(?<![\w./-])(?P<name>[\"']?[A-Za-z_][\w.-]*[\"']?)\s*:(?!//)\s*")
_FIELD_VALUE_RE = re.compile(rf"{_QUOTED}|[^\s\"',}}\]]+")


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from a URL or any message (an error, a log line, JSON).

    * User information in URLs becomes ``***``, whole: ``http://user:p@ss@host/x``
      gives ``http://***@host/x``.
    * Values of query parameters and fields whose name holds a credential (see
      :func:`is_secret_name`) become ``REDACTED``, in URLs, URL-encoded URLs,
      ``name: value`` fields and JSON; so do ``Authorization`` and ``Cookie`` header
      values, bearer tokens and JSON Web Tokens.
    * ``secrets``: literal values to remove as well (e.g. the keys in storage options).

    Parameters
    ----------
    text : object
        A URL or any message (converted with ``str``).
    secrets : iterable of str
        Literal values to replace with ``REDACTED``.

    Returns
    -------
    str
        The text without its credentials; redacting it again changes nothing.

    Examples
    --------
    >>> redact("http://user:pass@host/x.jpg?X-Amz-Signature=abc&size=webview")
    'http://***@host/x.jpg?X-Amz-Signature=REDACTED&size=webview'
    >>> redact('{"api-key": "abc 123", "user": "ann"}')
    '{"api-key": "REDACTED", "user": "ann"}'
    """
    out = str(text)
    if not secrets and _is_plain(out):
        return out
    for secret in secrets:
        if secret:
            out = out.replace(secret, _REDACTED)
    out = _URL_RE.sub(_without_userinfo, out)
    out = _HEADER_RE.sub(rf"\g<name>{_REDACTED}", out)
    out = _BEARER_RE.sub(rf"\g<name>{_REDACTED}", out)
    out = _JWT_RE.sub(_REDACTED, out)
    out = _redact_values(out, _PARAM_RE, _PARAM_VALUE_RE)
    return _redact_values(out, _FIELD_RE, _FIELD_VALUE_RE)


# A URL or path that none of the rules below can change: a scheme and a host with no
# user information, a port, and a path without ":", "=", "@", a query, white space or
# quotes. Most of a catalog's URIs are such; checking costs a fraction of redacting.
_PLAIN_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9.-]*(?::[0-9]+)?)?"
                       r"[A-Za-z0-9_.~/%+!$&()*,-]*")


def _is_plain(text: str) -> bool:
    return (_PLAIN_RE.fullmatch(text) is not None and "eyJ" not in text
            and "%3d" not in text.lower())


def _without_userinfo(match: re.Match[str]) -> str:
    """A URL with its user information (up to the last ``@`` before the host) hidden."""
    rest = match["rest"]
    at = _userinfo_end(rest)
    return match["scheme"] + (rest if at < 0 else "***" + rest[at:])


def _userinfo_end(rest: str) -> int:
    """The index of the ``@`` that ends the user information in ``rest``, or -1."""
    end = _authority_end(rest, 0)
    at = rest.rfind("@", 0, end)
    if at >= 0:
        return at
    # A password holding "/", "?" or "#" ends the authority early; its "port" is then
    # no number. Count everything up to the last "@" before the next "/" as userinfo.
    _, colon, port = rest[:end].partition(":")
    first_at = rest.find("@", end)
    if not colon or port.isdigit() or rest.startswith("[") or first_at < 0:
        return -1
    return rest.rfind("@", 0, _authority_end(rest, first_at))


def _authority_end(rest: str, start: int) -> int:
    ends = [i for i in (rest.find(c, start) for c in "/?#") if i >= 0]
    return min(ends, default=len(rest))


def _redact_values(text: str, name_re: re.Pattern[str], value_re: re.Pattern[str]) -> str:
    """Replace the value after every secret name that ``name_re`` finds.

    Only secret names consume their value, so a pair nested in another value (a
    URL-encoded URL in a ``next=`` parameter) is still found.
    """
    parts, done = [], 0
    for match in name_re.finditer(text):
        if match.start() < done or not is_secret_name(match["name"].strip("\"'")):
            continue
        value = value_re.match(text, match.end())
        found = value[0] if value else ""
        if not found or found.strip("\"'") == _REDACTED:
            continue
        quote = found[0] if found[0] in "\"'" else ""
        parts += [text[done:match.end()], quote, _REDACTED, quote]
        done = match.end() + len(found)
    return "".join(parts) + text[done:]


def secret_values(options: Any) -> list[str]:
    """String values in (nested) storage options that are credentials.

    Values of secret-named keys (:func:`is_secret_name`, and ``password``) and the
    password of an auth object (``aiohttp.BasicAuth``), longest first; values shorter
    than four characters are left out, as they would blank out ordinary words.

    Parameters
    ----------
    options : object
        Storage options: a dict, nested dicts and lists of them; anything else holds
        no secret.

    Returns
    -------
    list of str
        The credentials found, each once, longest first: the ``secrets`` to give
        :func:`redact`.

    Examples
    --------
    >>> options = {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value", "pwd": "abc",
    ...            "client_kwargs": {"endpoint_url": "http://127.0.0.1:7480"}}
    >>> secret_values(options)
    ['s3cr3t-value', 'AKIAEXAMPLE']
    >>> redact("signing with s3cr3t-value failed", secret_values(options))
    'signing with REDACTED failed'
    """
    found: list[str] = []
    if isinstance(options, dict):
        for name, value in options.items():
            if isinstance(value, str) and is_secret_name(str(name)):
                found.append(value)
            elif isinstance(getattr(value, "password", None), str):
                found.append(value.password)
            else:
                found.extend(secret_values(value))
    elif isinstance(options, (list, tuple)):
        for value in options:
            found.extend(secret_values(value))
    return sorted((s for s in set(found) if len(s) >= 4), key=len, reverse=True)


# --------------------------------------------------------------------------- addresses
#: Networks a media URL may not reach unless allowed, with what they are.
PRIVATE_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved (6to4 relay)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "private (NAT64)"),
        ("100::/64", "reserved (discard)"),
        ("2001::/23", "reserved (IETF)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_INET_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def literal_address(host: str | None) -> IPAddress | None:
    """The IP address that ``host`` spells by itself, or None for a name.

    Understands every spelling the C library's ``inet_aton`` (and so a connect call)
    accepts: dotted quads with one to four parts, each decimal, octal (leading ``0``)
    or hexadecimal (``0x``), so ``2130706433``, ``0x7f.1``, ``017700000001`` and
    ``127.1`` are all 127.0.0.1; and IPv6 with or without brackets and zone.

    Examples
    --------
    >>> literal_address("0x7f.1"), literal_address("media.idigbio.org")
    (IPv4Address('127.0.0.1'), None)
    """
    if not host:
        return None
    host = host.strip("[]").rstrip(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError:
            return None
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.fullmatch(p) for p in parts):
        return None
    *head, last = [_inet_number(p) for p in parts]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    return ipaddress.IPv4Address(value * 256 ** (4 - len(head)) + last)


def _inet_number(part: str) -> int:
    """One part of an ``inet_aton`` address: ``0x..`` hex, ``0..`` octal, else decimal."""
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8) if part.startswith("0") else int(part)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a connection to ``address`` reaches: mapped, NAT64, 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses a media URL may reach.

    Parameters
    ----------
    allow_private : bool
        Reach every address (no check at all).
    allow_networks : tuple of str
        Networks (``"10.1.2.0/24"``, ``"fd00::/8"``, a single address) reachable even
        though they are in :data:`PRIVATE_NETWORKS`, e.g. a Ceph gateway's.

    Raises
    ------
    ValueError
        When an entry of ``allow_networks`` is not a network or an address.

    Examples
    --------
    >>> policy = AddressPolicy()
    >>> policy.refusal("169.254.169.254"), policy.refusal("8.8.8.8")
    ('link-local (cloud metadata)', None)
    >>> policy.refusal("::ffff:127.0.0.1")
    'loopback, inside ::ffff:7f00:1'
    >>> ceph = AddressPolicy(allow_networks=("10.1.2.0/24",))
    >>> ceph.refusal("10.1.2.7"), ceph.refusal("10.9.0.1")
    (None, 'private')
    """

    allow_private: bool = False
    allow_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", tuple(
            ipaddress.ip_network(net, strict=False) for net in self.allow_networks))

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why ``address`` may not be reached (``"loopback"``, ...), or None if it may."""
        if self.allow_private:
            return None
        if isinstance(address, str):
            address = ipaddress.ip_address(address)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        if any(address in net for net in self._allowed):  # type: ignore[attr-defined]
            return None
        inner = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        if inner is not None:  # the IPv4 address decides, wherever it is written
            why = self.refusal(inner)
            return f"{why}, inside {address}" if why else None
        for net, what in PRIVATE_NETWORKS:
            if address.version == net.version and address in net:
                return what
        return None
