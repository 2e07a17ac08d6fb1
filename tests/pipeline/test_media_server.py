"""The loopback media server itself, through the standard library's HTTP client."""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from idigdask.testing.media_server import MediaServer

pytestmark = pytest.mark.timeout(30)

BODY = b"\xff\xd8\xff" + bytes(5000)


@pytest.fixture()
def server(tmp_path):
    (tmp_path / "a.jpg").write_bytes(BODY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b c.png").write_bytes(b"png!")
    with MediaServer(tmp_path) as srv:
        yield srv


def get(server: MediaServer, path: str, method: str = "GET", timeout: float = 5):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request(method, path)
    response = conn.getresponse()
    return response, response.read(), conn


def test_serves_files_with_length_and_type(server):
    response, body, _ = get(server, "/a.jpg")
    assert response.status == 200 and body == BODY
    assert response.getheader("Content-Length") == str(len(BODY))
    assert response.getheader("Content-Type") == "image/jpeg"
    response, body, _ = get(server, "/sub/b%20c.png")
    assert body == b"png!" and response.getheader("Content-Type") == "image/png"
    assert server.url_for("sub/b c.png").endswith("/sub/b%20c.png")


def test_head_missing_and_outside_root(server):
    response, body, _ = get(server, "/a.jpg", method="HEAD")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Length") == str(len(BODY))
    assert get(server, "/missing.jpg")[0].status == 404
    assert get(server, "/../../etc/passwd")[0].status == 404
    assert get(server, "/fault/nonsense/x")[0].status == 400


def test_keep_alive_reuses_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/a.jpg")
        assert conn.getresponse().read() == BODY
    assert server.requests["/a.jpg"] == 3


def test_fail_counters_are_per_url(server):
    statuses = [get(server, "/fault/fail/503/2/a.jpg")[0].status for _ in range(3)]
    other = get(server, "/fault/fail/503/2/a.jpg?other")[0].status
    assert statuses == [503, 503, 200] and other == 503
    assert server.requests["/fault/fail/503/2/a.jpg"] == 4


def test_throttle_sends_retry_after(server):
    response, _, _ = get(server, "/fault/throttle/1/a.jpg?after=2")
    assert response.status == 429 and response.getheader("Retry-After") == "2"
    assert get(server, "/fault/throttle/1/a.jpg?after=2")[0].status == 200


def test_short_and_reset_bodies(server):
    for path in ("/fault/short/a.jpg", "/fault/reset/always/a.jpg"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
            response.read()


def test_redirects(server):
    response, _, _ = get(server, "/fault/redirect/sub/b%20c.png")
    assert response.status == 302 and response.getheader("Location") == "/sub/b%20c.png"
    response, _, _ = get(server, "/fault/chain/2/a.jpg")
    assert response.getheader("Location") == "/fault/chain/1/a.jpg"
    assert get(server, "/fault/chain/0/a.jpg")[1] == BODY
    response, _, _ = get(server, "/fault/loop/x?q=1")
    assert response.getheader("Location") == "/fault/loop/x?q=1"


def test_status_html_and_huge(server):
    assert get(server, "/fault/status/410/x")[0].status == 410
    response, body, _ = get(server, "/fault/html/x")
    assert response.status == 200 and body.startswith(b"<!DOCTYPE html>")
    response, body, _ = get(server, "/fault/huge/300000")
    assert response.getheader("Content-Length") == "300000" and body == bytes(300000)


def test_endless_body_keeps_sending(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/fault/endless/x")
    response = conn.getresponse()
    assert response.getheader("Content-Length") is None
    assert len(response.read(2_000_000)) == 2_000_000
    conn.close()


def test_slow_waits_before_headers(server):
    start = time.monotonic()
    assert get(server, "/fault/slow/0.3/a.jpg")[1] == BODY
    assert time.monotonic() - start >= 0.3


def test_hang_neither_answers_nor_blocks_close(tmp_path):
    server = MediaServer(tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.3)
    conn.request("GET", "/fault/hang/x")
    with pytest.raises(socket.timeout):
        conn.getresponse()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    idle.request("GET", "/fault/html/x")
    idle.getresponse().read()  # an idle keep-alive connection stays open
    start = time.monotonic()
    server.close()
    assert time.monotonic() - start < 2
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_counts_concurrency(server):
    def slow(_):
        return get(server, "/fault/slow/0.3/a.jpg")[0].status

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(slow, range(4))) == [200] * 4
    assert server.max_in_flight == 4 and server.in_flight == 0
    server.reset_stats()
    assert server.requests == {} and server.max_in_flight == 0


def test_many_concurrent_connections(server):
    def fetch(i):
        return get(server, f"/a.jpg?i={i}")[1] == BODY

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(fetch, range(300)))
    assert server.requests["/a.jpg"] == 300


def test_binds_loopback_only(tmp_path):
    with pytest.raises(ValueError):
        MediaServer(tmp_path, host="0.0.0.0")
    with MediaServer(tmp_path) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert srv._httpd.server_address[0] == "127.0.0.1"


def test_goto_redirects_anywhere_with_the_code_asked(server):
    response, _, _ = get(server, "/fault/goto/307?to=http%3A%2F%2F127.0.0.2%3A9%2Fa.jpg")
    assert response.status == 307 and response.getheader("Location") == "http://127.0.0.2:9/a.jpg"
    response, _, _ = get(server, "/fault/goto/301?to=/a.jpg")
    assert response.status == 301 and response.getheader("Location") == "/a.jpg"
    assert get(server, "/fault/goto/200?to=/a.jpg")[0].status == 400
    assert get(server, "/fault/goto/302")[0].status == 400  # no target


def test_headers_route_echoes_the_request(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/fault/headers/x", headers={"X-Api-Key": "k1"})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["X-Api-Key"] == "k1"


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
def test_other_loopback_addresses_are_other_hosts(tmp_path, host):
    (tmp_path / "a.jpg").write_bytes(BODY)
    with MediaServer(tmp_path, host=host) as srv:
        assert srv.url == (f"http://[{host}]:{srv.port}" if ":" in host
                           else f"http://{host}:{srv.port}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.settimeout(5)
            sock.connect((host, srv.port))
            sock.sendall(b"GET /a.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(BODY)
    with pytest.raises(ValueError):
        MediaServer(tmp_path, host="192.0.2.1")
