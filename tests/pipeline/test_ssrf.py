"""Media URLs from a catalog may not reach private addresses unless the caller allows it.

The suite opts in to private addresses for its loopback servers (``conftest.py``);
these tests switch that off. What counts as "allowed" is made testable on loopback
without faking DNS: a server on 127.0.0.2 is allowed through ``allow_networks`` while
127.0.0.1 stays refused, so a redirect from an allowed origin to a refused one is a
real redirect between two real servers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import dask
import pytest
import yaml

import idigdask
from idigdask.errors import UserError
from idigdask.fetch import (FetchOptions, FetchResult, _CheckedResolver, _RefusedAddress,
                            close_sessions, fetch_many)
from idigdask.testing.media_server import MediaServer
from idigdask.urls import AddressPolicy, literal_address

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes(range(256)) * 8
ALLOWED_HOST = "127.0.0.2"


@pytest.fixture(autouse=True)
def fresh_sessions():
    """Each test's fetches resolve names anew: some tests replace the resolver, and
    the HTTP sessions (with their resolvers and DNS caches) outlive a call."""
    close_sessions()
    yield
    close_sessions()


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssrf")
    (root / "sheet.jpg").write_bytes(PAYLOAD)
    return root


@pytest.fixture(scope="module")
def refused(media_root):
    """A server on 127.0.0.1: loopback, refused by default."""
    with MediaServer(media_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def allowed(media_root):
    """A server on 127.0.0.2, the one address these tests allow."""
    with MediaServer(media_root, host=ALLOWED_HOST) as srv:
        yield srv


@pytest.fixture()
def no_opt_in():
    """The default a user gets: the session's opt-in switched off."""
    with dask.config.set({"idigdask.fetch.allow-private": False}):
        yield


def strict(**kwargs) -> FetchOptions:
    settings = dict(timeout=2.0, retries=2, backoff=0.01, allow_private=False)
    settings.update(kwargs)
    return FetchOptions(**settings)


def only_allowed() -> FetchOptions:
    return strict(allow_networks=(f"{ALLOWED_HOST}/32",))


def fetch_one(url: str, options: FetchOptions) -> FetchResult:
    (result,) = fetch_many([url], options)
    return result


def goto(srv: MediaServer, target: str, code: int = 302) -> str:
    return f"{srv.url}/fault/goto/{code}/{uuid.uuid4().hex}?to={quote(target, safe='')}"


def assert_refused(result: FetchResult) -> None:
    assert result.status == "failed" and result.reason == "private_address", result
    assert result.attempts == 1 and result.data is None  # not transient: no retry


# ------------------------------------------------------------------ the default, config
def test_default_is_off_and_follows_dask_config():
    with dask.config.set({"idigdask.fetch.allow-private": False}):
        assert FetchOptions().allow_private is False
        assert FetchOptions(allow_private=True).allow_private is True  # keywords win
    with dask.config.set({"idigdask.fetch.allow-private": "true"}):
        assert FetchOptions().allow_private is True
    with dask.config.set({"idigdask.fetch.allow-private": "maybe"}), \
            pytest.raises(UserError, match="allow-private"):
        FetchOptions()
    with dask.config.set({"idigdask.fetch.allow-networks": "10.1.0.0/16, 192.168.7.7"}):
        assert FetchOptions().allow_networks == ("10.1.0.0/16", "192.168.7.7")
    with pytest.raises(UserError, match="allow_networks"):
        FetchOptions(allow_networks=("not a network",))


def test_defaults_file_ships_with_the_package():
    text = resources.files("idigdask").joinpath("idigdask.yaml").read_text()
    fetch = yaml.safe_load(text)["idigdask"]["fetch"]
    assert fetch["allow-private"] is False and fetch["allow-networks"] == []
    pyproject = tomllib.loads((Path(idigdask.__file__).parents[1] / "pyproject.toml").read_text())
    assert "idigdask.yaml" in pyproject["tool"]["setuptools"]["package-data"]["idigdask"]


PROBE = ("from idigdask.fetch import FetchOptions; o = FetchOptions(); "
         "print(o.allow_private, list(o.allow_networks))")


def probe(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_environment_and_yaml_files_reach_a_new_process(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert probe({"DASK_CONFIG": str(empty)}) == "False []"
    assert probe({"DASK_CONFIG": str(empty), "DASK_IDIGDASK__FETCH__ALLOW_PRIVATE": "true"}) \
        == "True []"
    folder = tmp_path / "dask"
    folder.mkdir()
    (folder / "idigdask.yaml").write_text(
        "idigdask:\n  fetch:\n    allow-networks: ['10.1.2.0/24']\n")
    assert probe({"DASK_CONFIG": str(folder)}) == "False ['10.1.2.0/24']"


def test_import_idigdask_loads_neither_dask_nor_the_config():
    code = ("import sys, idigdask; "
            "print(sorted(m for m in ('dask', 'idigdask.config', 'aiohttp') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


# ------------------------------------------------------------------------ direct URLs
def test_loopback_url_is_refused_by_default(refused, no_opt_in):
    refused.reset_stats()
    url = refused.url.replace("http://", "http://reader:p@ss-word@") + "/sheet.jpg?token=t0ken"
    result = fetch_one(url, FetchOptions(timeout=2, retries=2))
    assert_refused(result)
    assert "127.0.0.1 is loopback" in result.message and "allow_private" in result.message
    assert "ss-word" not in result.message and "t0ken" not in result.message
    assert refused.requests == {}  # refused before connecting


def test_opt_in_fetches_loopback(refused):
    assert fetch_one(refused.url_for("sheet.jpg"), strict(allow_private=True)).data == PAYLOAD
    with dask.config.set({"idigdask.fetch.allow-private": True}):
        assert fetch_one(refused.url_for("sheet.jpg"), FetchOptions()).ok


SPELLINGS = [
    "2130706433", "0x7f.1", "0x7f000001", "017700000001", "0177.0.0.1", "127.1",
    "127.0.0.1.", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]", "[2002:7f00:1::1]",
]


@pytest.mark.parametrize("host", SPELLINGS)
def test_every_spelling_of_loopback_is_refused(refused, host):
    refused.reset_stats()
    result = fetch_one(f"http://{host}:{refused.port}/sheet.jpg", strict())
    assert_refused(result)
    assert refused.requests == {}


@pytest.mark.parametrize("host", [
    "169.254.169.254", "[fe80::1%25lo]", "10.0.0.1", "172.16.0.1", "192.168.1.1",
    "100.64.0.1", "0.0.0.0", "0", "[::]", "224.0.0.1", "255.255.255.255", "[fc00::1]",
    "[fd12:3456::1]", "[ff02::1]", "240.0.0.1", "[::ffff:169.254.169.254]",
])
def test_private_and_reserved_addresses_are_refused_without_a_connection(host):
    start = time.monotonic()
    result = fetch_one(f"http://{host}/latest/meta-data/", strict(timeout=5))
    assert_refused(result)
    assert time.monotonic() - start < 1  # refused, not left to time out


def test_a_name_that_resolves_to_loopback_is_refused(refused):
    refused.reset_stats()
    result = fetch_one(f"http://localhost:{refused.port}/sheet.jpg", strict())
    assert_refused(result)
    assert "localhost, which resolves to" in result.message
    assert refused.requests == {}


def test_allow_networks_allows_only_those(allowed, refused):
    assert fetch_one(allowed.url_for("sheet.jpg"), only_allowed()).data == PAYLOAD
    assert_refused(fetch_one(refused.url_for("sheet.jpg"), only_allowed()))


# -------------------------------------------------------------------------- redirects
def test_redirect_from_an_allowed_origin_to_loopback_is_refused(allowed, refused):
    refused.reset_stats()
    for target in (refused.url_for("sheet.jpg"),                       # a literal address
                   f"http://localhost:{refused.port}/sheet.jpg",         # a name resolving to it
                   f"http://2130706433:{refused.port}/sheet.jpg",        # an integer spelling
                   f"http://[::ffff:127.0.0.1]:{refused.port}/sheet.jpg"):
        result = fetch_one(goto(allowed, target), only_allowed())
        assert_refused(result)
        assert "a redirect from" in result.message, result.message
    assert refused.requests == {}
    # a redirect within the allowed origin is followed
    assert fetch_one(goto(allowed, "/sheet.jpg", 301), only_allowed()).ok


def test_redirect_to_the_metadata_service_is_refused(allowed):
    result = fetch_one(goto(allowed, "http://169.254.169.254/latest/meta-data/iam/"),
                       only_allowed())
    assert_refused(result)
    assert "169.254.169.254 is link-local" in result.message


def test_every_hop_of_a_chain_is_checked(allowed, refused):
    refused.reset_stats()
    inner = goto(allowed, refused.url_for("sheet.jpg"))
    result = fetch_one(goto(allowed, inner), only_allowed())
    assert_refused(result)
    assert refused.requests == {}


# -------------------------------------------------------------- resolution and schemes
class Answers:
    """A resolver whose answers are scripted: one list of addresses per lookup."""

    def __init__(self, *answers: list[str]):
        self.answers = list(answers)
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": 0} for a in self.answers.pop(0)]

    async def close(self):
        pass


def test_the_checked_resolver_checks_every_answer_it_hands_on():
    # DNS rebinding: a public answer first, loopback next; each lookup is checked
    inner = Answers(["93.184.216.34"], ["127.0.0.1"], ["93.184.216.34", "10.0.0.7"])
    resolver = _CheckedResolver(AddressPolicy(), inner=inner)

    async def lookups():
        first = await resolver.resolve("media.example.org", 80)
        with pytest.raises(_RefusedAddress, match="127.0.0.1, loopback"):
            await resolver.resolve("media.example.org", 80)
        with pytest.raises(_RefusedAddress, match="10.0.0.7"):  # one bad answer is enough
            await resolver.resolve("media.example.org", 80)
        return first

    assert asyncio.run(lookups())[0]["host"] == "93.184.216.34"


def test_a_public_looking_name_that_resolves_to_loopback(refused, monkeypatch):
    import aiohttp

    answers = Answers(["127.0.0.1"], ["127.0.0.1"])
    monkeypatch.setattr(aiohttp, "DefaultResolver", lambda: answers)
    refused.reset_stats()
    result = fetch_one(f"http://media.example.org:{refused.port}/sheet.jpg", strict())
    assert_refused(result)
    assert "media.example.org, which resolves to 127.0.0.1" in result.message
    assert refused.requests == {}
    # allowed, the connection goes exactly where the checked answer said
    ok = fetch_one(f"http://media.example.org:{refused.port}/sheet.jpg",
                   strict(allow_networks=("127.0.0.1",)))
    assert ok.data == PAYLOAD and answers.asked == ["media.example.org"] * 2


def test_a_proxy_the_caller_names_is_not_checked():
    inner = Answers(["10.0.0.3"])
    resolver = _CheckedResolver(AddressPolicy(), frozenset({"proxy.lan"}), inner=inner)
    assert asyncio.run(resolver.resolve("proxy.lan", 3128))[0]["host"] == "10.0.0.3"


def test_local_and_memory_urls_are_not_checked(media_root, no_opt_in):
    import fsspec

    with fsspec.open("memory://ssrf/a.jpg", "wb") as f:
        f.write(b"m")
    results = fetch_many([str(media_root / "sheet.jpg"), f"file://{media_root}/sheet.jpg",
                          "memory://ssrf/a.jpg"], FetchOptions())
    assert [r.reason for r in results] == [None, None, None]


def test_literal_addresses_are_parsed_as_a_connect_call_would():
    loopback = ipaddress.ip_address("127.0.0.1")
    for host in ("2130706433", "0x7f.1", "0x7F.0.0.1", "017700000001", "127.1", "127.0.1"):
        assert literal_address(host) == loopback, host
    for name in ("media.idigbio.org", "1.2.3.4.5", "4294967296", "08.1.2.3", "0x7g.1", ""):
        assert literal_address(name) is None, name
    socket_says = socket.inet_ntoa(socket.inet_aton("0x7f.1"))
    assert str(literal_address("0x7f.1")) == socket_says


def test_public_addresses_pass():
    policy = AddressPolicy()
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8",
                    "2002:808:808::1", "64:ff9b::808:808"):
        assert policy.refusal(address) is None, address
    for address, why in (("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
                         ("::ffff:10.0.0.1", "private"), ("fe80::1%eth0", "link-local")):
        assert why in policy.refusal(address), address


# --------------------------------------------------------------------------- builds
def test_a_build_records_the_refusal_in_the_ledger(tmp_path, refused, dask_client, no_opt_in):
    from frames import catalog_frame

    urls = [refused.url_for("sheet.jpg") + "?api-key=k3y-value",
            f"http://localhost:{refused.port}/sheet.jpg", "http://169.254.169.254/x.jpg"]
    store = str(tmp_path / "ssrf.zarr")
    result = idigdask.build_dataset(catalog_frame(urls), store, client=dask_client, size=32,
                                    timeout=2, retries=0, dedup=False, progress=False)
    ledger = idigdask.read_ledger(store)
    assert list(ledger["reason"]) == ["private_address"] * 3
    assert set(ledger["status"]) == {"failed"} and result.counts.get("ok", 0) == 0
    assert "k3y-value" not in json.dumps(ledger.astype(str).to_dict())


def test_build_and_cli_opt_in(tmp_path, refused, dask_client, no_opt_in):
    """``allow_private=True`` and ``--allow-private`` let a build reach the loopback server."""
    import subprocess
    import sys
    from pathlib import Path

    from frames import catalog_frame

    from idigdask.synthetic import make_sheets

    folder = make_sheets(tmp_path / "sheets", n=1, size=(120, 160), seed=3).folder
    sheet = next((Path(folder) / "images").glob("*.jpg"))
    Path(refused.root, "real.jpg").write_bytes(sheet.read_bytes())
    url = refused.url_for("real.jpg")
    store = str(tmp_path / "opt-in.zarr")
    result = idigdask.build_dataset(catalog_frame([url]), store, client=dask_client, size=32,
                                    allow_private=True, progress=False)
    assert result.counts["status"]["ok"] == 1, idigdask.read_ledger(store)["message"].tolist()

    catalog = tmp_path / "urls.csv"
    catalog.write_text(f"url\n{url}\n")
    env = {k: v for k, v in os.environ.items() if k != "DASK_IDIGDASK__FETCH__ALLOW_PRIVATE"}
    idigdask_cli = str(Path(sys.executable).parent / "idigdask")
    for flags, status in (([], "failed"), (["--allow-private"], "ok")):
        out = tmp_path / f"cli{len(flags)}.zarr"
        done = subprocess.run([idigdask_cli, "build", str(catalog), "-o", str(out), "--size", "32",
                               "--retries", "0", "--json", *flags],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["status"][status] == 1, flags
        assert status == "ok" or summary["reasons"] == {"failed: private_address": 1}
