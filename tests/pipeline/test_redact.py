"""Redaction of credentials in URLs and messages (idigdask.urls)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idigdask import fetch, urls
from idigdask.urls import is_secret_name, redact, secret_values

SECRET = "s3cr3t-V4lue"


@pytest.mark.parametrize("url, expected", [
    ("http://user:pass@host/x", "http://***@host/x"),
    ("http://user:p@ss@host/x", "http://***@host/x"),              # "@" in the password
    ("https://u:a@b@c@media.org:8443/s.jpg?size=1", "https://***@media.org:8443/s.jpg?size=1"),
    ("http://u:pa/ss@host/x", "http://***@host/x"),                # "/" in the password
    ("http://u:pa?ss@host/x", "http://***@host/x"),                # "?" in the password
    ("http://user@host/x", "http://***@host/x"),
    ("s3://KEY:SECRET@bucket/a.jpg", "s3://***@bucket/a.jpg"),
    ("http://host:8080/@curator/a.jpg", "http://host:8080/@curator/a.jpg"),  # "@" in a path
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
])
def test_user_information_is_hidden_whole(url, expected):
    assert redact(url) == expected
    assert redact(f"GET {url} failed: 404") == f"GET {expected} failed: 404"


NAMES = ["token", "access_token", "id_token", "refresh_token", "api_key", "api-key", "apikey",
         "key", "secret", "client_secret", "signature", "sig", "password", "passwd", "pwd",
         "jwt", "session", "sessionid", "auth", "X-Amz-Signature", "X-Amz-Credential",
         "X-Amz-Security-Token", "AWSAccessKeyId", "Signature", "X-Goog-Signature",
         "subscription-key", "policy", "JSESSIONID", "oauth_token", "x-api-key"]


@pytest.mark.parametrize("name", NAMES + [n.upper() for n in NAMES[:8]])
def test_secret_query_parameters(name):
    url = f"https://media.org/a.jpg?size=webview&{name}={SECRET}&Expires=9"
    assert redact(url) == f"https://media.org/a.jpg?size=webview&{name}=REDACTED&Expires=9"
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["size", "Expires", "format", "author", "keyword", "id",
                                  "monkey", "X-Amz-Date", "X-Amz-Expires", "uuid"])
def test_ordinary_parameters_are_kept(name):
    url = f"https://media.org/a.jpg?{name}=value1"
    assert redact(url) == url and not is_secret_name(name)


@pytest.mark.parametrize("text", [
    f'{{"api_key": "{SECRET}", "user": "ann"}}',
    f"{{'password': '{SECRET}'}}",
    f"password: {SECRET}",
    f"X-Api-Key: {SECRET}",
    f"Authorization: Bearer {SECRET}\r\n",
    f"authorization='AWS4-HMAC-SHA256 Credential=AKIA/{SECRET}, Signature=ff'",
    f"Cookie: theme=dark; session={SECRET}",
    f"BasicAuth(login='reader', password='{SECRET}', encoding='latin1')",
    f"headers={{'x-api-key': '{SECRET}'}}",
    f"next=https%3A%2F%2Fh%2Fx%3Ftoken%3D{SECRET}%26size%3D1",
    f"token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{SECRET}",
    f"the header was Bearer {SECRET}",
    f'{{"secret": "a \\" quote {SECRET}"}}',
])
def test_secrets_in_free_text_json_and_headers(text):
    out = redact(text)
    assert SECRET not in out and "REDACTED" in out
    assert redact(out) == out  # idempotent


def test_kept_around_the_secrets():
    text = ('{"api-key": "abc 123", "user": "ann", "endpoint_url": "http://ceph:7480"} '
            "error: token expired at 12:00; s3://bucket/key.jpg /data/sheets/a.jpg")
    assert redact(text) == text.replace("abc 123", "REDACTED")
    assert redact("http://session:8080/x") == "http://session:8080/x"  # a host, not a field


def test_literal_secrets_and_storage_options():
    options = {"s3": {"key": "AKIA-KEY-ID", "secret": SECRET,
                      "client_kwargs": {"endpoint_url": "http://ceph"}},
               "https": {"headers": {"X-Api-Key": "header-key-9"}}}
    found = secret_values(options)
    assert set(found) == {"AKIA-KEY-ID", SECRET, "header-key-9"}
    assert redact(f"denied for {SECRET} at http://ceph", found) == \
        "denied for REDACTED at http://ceph"


def test_fetch_reexports_the_same_functions():
    assert fetch.redact is urls.redact and fetch.classify_scheme is urls.classify_scheme


def test_urls_module_imports_no_network_library():
    code = "import sys, idigdask.urls; print('aiohttp' in sys.modules, 'dask' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False False", done.stderr


name_strategy = st.sampled_from(NAMES)
value_strategy = st.text(st.characters(codec="ascii", categories=("L", "N"),
                                       include_characters="-_.~+/"), min_size=6, max_size=30)


@settings(max_examples=200, deadline=None)
@given(name=name_strategy, value=value_strategy, quoted=st.booleans(),
       form=st.sampled_from(["query", "json", "field"]))
def test_no_secret_value_survives(name, value, quoted, form):
    if form == "query":
        text = f"https://h.org/p?a=1&{name}={value}&b=2"
    elif form == "json":
        text = json.dumps({"x": 1, name: value})
    else:
        text = f"{name}: {json.dumps(value) if quoted else value}"
    assert value not in redact(text).replace("REDACTED", "")


_URLISH = st.text(alphabet="abkeyKEYsigtokn019.-_~/%+!$&()*,:@=?#;[] \"'3dDfF", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["", "http://", "https://", "s3://", "file://", "/"]), _URLISH)
def test_the_fast_path_skips_only_what_redaction_would_not_change(prefix, rest):
    text = prefix + rest
    if urls._is_plain(text):
        # secrets=[""]: the full rules, with nothing literal to remove
        assert redact(text, secrets=[""]) == text


@pytest.mark.parametrize("text", [
    "https://media.example.org/fullsize/0a1b.jpg", "/data/sheets/a b.jpg".replace(" ", "_"),
    "http://127.0.0.1:8080/m/x.jpg", "s3://bucket/key/x.jpg"])
def test_plain_uris_take_the_fast_path(text):
    assert urls._is_plain(text) and redact(text) == text
