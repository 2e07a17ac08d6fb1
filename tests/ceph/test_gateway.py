"""The local Ceph RADOS Gateway behaves like the S3 storage the pipeline reads."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request

import pytest

from idigdask.testing.ceph import CephGateway, ceph_script, parse_exports, run_ceph_script

pytestmark = pytest.mark.ceph


def test_put_get_and_list_objects(s3, bucket):
    s3.pipe({f"{bucket}/media/a.jpg": b"aaa", f"{bucket}/media/b.jpg": b"bbbb"})
    s3.pipe(f"{bucket}/catalog.csv", b"id,url\n")

    assert s3.cat(f"{bucket}/media/b.jpg") == b"bbbb"
    assert sorted(s3.ls(f"{bucket}/media", detail=False)) == [
        f"{bucket}/media/a.jpg",
        f"{bucket}/media/b.jpg",
    ]
    assert len(s3.find(bucket)) == 3
    assert s3.info(f"{bucket}/media/a.jpg")["size"] == 3


def test_five_megabyte_object_round_trip(s3, bucket):
    data = os.urandom(5 * 1024 * 1024 + 17)  # over s3fs's 5 MiB multipart block size
    with s3.open(f"{bucket}/big.bin", "wb") as f:
        f.write(data)

    assert s3.info(f"{bucket}/big.bin")["size"] == len(data)
    assert s3.cat(f"{bucket}/big.bin") == data


def test_public_object_served_over_plain_http(ceph, s3, public_bucket):
    s3.pipe(f"{public_bucket}/images/1.jpg", b"\xff\xd8jpeg bytes")

    url = ceph.public_url(public_bucket, "images/1.jpg")
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.read() == b"\xff\xd8jpeg bytes"


def test_private_object_refused_without_credentials(ceph, s3, bucket):
    s3.pipe(f"{bucket}/secret.jpg", b"x")

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(ceph.public_url(bucket, "secret.jpg"), timeout=10)
    assert info.value.code == 403


def test_wrong_credentials_are_rejected(ceph, s3, bucket):
    s3.pipe(f"{bucket}/a", b"a")
    wrong = CephGateway(ceph.endpoint, ceph.key, "not-the-secret")

    with pytest.raises(PermissionError):
        wrong.filesystem().cat(f"{bucket}/a")


def test_missing_bucket_is_an_error(s3):
    with pytest.raises(FileNotFoundError):
        s3.ls("no-such-bucket-idigdask", refresh=True)
    with pytest.raises(FileNotFoundError):
        s3.cat("no-such-bucket-idigdask/a.jpg")


def test_upload_folder_keeps_relative_paths(ceph, s3, bucket, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.bin").write_bytes(b"c")
    (tmp_path / "top.txt").write_bytes(b"top")

    keys = ceph.upload_folder(tmp_path, bucket, "run1/")

    assert keys == ["run1/a/b/c.bin", "run1/top.txt"]
    assert s3.cat(f"{bucket}/run1/a/b/c.bin") == b"c"
    assert s3.cat(f"{bucket}/run1/top.txt") == b"top"


def test_gateway_restart_keeps_objects(ceph, public_bucket):
    ceph.filesystem().pipe(f"{public_bucket}/kept.jpg", b"kept")
    url = ceph.public_url(public_bucket, "kept.jpg")

    ceph.stop_gateway()
    try:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        ceph.start_gateway()

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"kept"
    assert ceph.filesystem().cat(f"{public_bucket}/kept.jpg") == b"kept"


def test_start_again_prints_the_same_env(ceph):
    again = CephGateway.from_env(parse_exports(run_ceph_script("start", ceph.state_dir)))
    assert (again.endpoint, again.key, again.secret) == (ceph.endpoint, ceph.key, ceph.secret)


def test_from_env_needs_endpoint_and_keys():
    assert CephGateway.from_env({}) is None
    assert CephGateway.from_env({"IDIGDASK_S3_ENDPOINT": "http://127.0.0.1:1"}) is None
    gw = CephGateway.from_env(
        {
            "IDIGDASK_S3_ENDPOINT": "http://127.0.0.1:1/",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
        }
    )
    assert gw == CephGateway("http://127.0.0.1:1", "k", "s", None)
    assert gw.storage_options == {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"},
    }
    assert "secret" not in repr(gw)


def test_script_rejects_unknown_command_and_reports_not_running(tmp_path):
    env = {**os.environ, "IDIGDASK_CEPH_DIR": str(tmp_path / "none")}
    bad = subprocess.run(["bash", str(ceph_script()), "bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "usage:" in bad.stderr

    idle = subprocess.run(["bash", str(ceph_script()), "env"], env=env, capture_output=True, text=True)
    assert idle.returncode == 1
    assert idle.stdout == "" and "not running" in idle.stderr
