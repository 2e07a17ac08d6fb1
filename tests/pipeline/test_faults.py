"""Every HTTP fault a media server can commit, through a whole build.

One catalog holds each fault of :class:`~idigdask.testing.media_server.MediaServer`
next to good images; a real LocalCluster builds it into a real store, and the ledger
must give every row its expected outcome, with counts that add up to the catalog.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

import idigdask
from idigdask.build import build_dataset
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
TIMEOUT = 1.0  # seconds per try: the slow and hanging routes must run past it
RETRIES = 2
MAX_BYTES = 2**20


@pytest.fixture(scope="module")
def server(small_sheets):
    with MediaServer(small_sheets.folder) as srv:
        yield srv


@pytest.fixture(scope="module")
def sheets(small_sheets) -> list[str]:
    """Paths of the sheets relative to the server's root."""
    root = Path(small_sheets.folder)
    return [p.relative_to(root).as_posix() for p in sorted((root / "images").glob("*.jpg"))]


def fault_cases(sheets: list[str]) -> dict[str, tuple[str, str, str | None, object]]:
    """Name -> (route, status, reason, attempts) where attempts is an int, a range or None.

    A query string of its own gives every route fresh failure counters.
    """
    tries = RETRIES + 1
    tag = f"?run={uuid.uuid4().hex}"
    return {
        "plain": (sheets[0], "ok", None, 1),
        "fails_500_twice": (f"fault/fail/500/2/{sheets[1]}{tag}", "ok", None, 3),
        "fails_503_once": (f"fault/fail/503/1/{sheets[2]}{tag}", "ok", None, 2),
        "throttled_429": (f"fault/throttle/1/{sheets[3]}{tag}&after=1", "ok", None, 2),
        "reset_once": (f"fault/reset/1/{sheets[4]}{tag}", "ok", None, 2),
        "reset_always": (f"fault/reset/always/{sheets[5]}{tag}", "failed", "truncated", tries),
        "short_body": (f"fault/short/{sheets[6]}{tag}", "failed", "truncated", tries),
        "slow_past_timeout": (f"fault/slow/10/{sheets[7]}{tag}", "failed", "timeout", tries),
        "slow_within_timeout": (f"fault/slow/0.2/{sheets[8]}{tag}", "ok", None, 1),
        "gone_404": (f"fault/status/404/a.jpg{tag}", "failed", "http_404", 1),
        "forbidden_403": (f"fault/status/403/b.jpg{tag}", "failed", "http_403", 1),
        "gone_410": (f"fault/status/410/c.jpg{tag}", "failed", "http_410", 1),
        "always_500": (f"fault/fail/500/always/{sheets[9]}{tag}", "failed", "http_5xx", tries),
        "redirect_once": (f"fault/redirect/{sheets[10]}", "ok", None, 1),
        "redirect_chain": (f"fault/chain/4/{sheets[11]}", "ok", None, 1),
        "redirect_loop": (f"fault/loop/x.jpg{tag}", "failed", "redirect_loop", 1),
        "html_page": (f"fault/html/d.jpg{tag}", "failed", "not_an_image", 1),
        "over_byte_cap": (f"fault/huge/{4 * MAX_BYTES}{tag}", "failed", "too_large", 1),
        "endless_body": (f"fault/endless/e.jpg{tag}", "failed", "too_large", 1),
        "never_answers": (f"fault/hang/f.jpg{tag}", "failed", "timeout", tries),
    }


@pytest.fixture(scope="module")
def fault_build(tmp_path_factory, server, sheets, dask_client):
    """Build one catalog holding every fault; return (cases, catalog, result, store)."""
    cases = fault_cases(sheets)
    uris = [server.url_for(route) for route, *_ in cases.values()]
    frame = catalog_frame(uris, list(cases))
    store = str(tmp_path_factory.mktemp("faults") / "faults.zarr")
    result = build_dataset(frame, store, size=48, chunk_size=4, batch_size=10,
                           timeout=TIMEOUT, retries=RETRIES, max_bytes=MAX_BYTES,
                           dedup=False, client=dask_client, progress=False)
    return cases, frame, result, store


def test_every_fault_has_its_outcome(fault_build):
    cases, frame, result, store = fault_build
    ledger = idigdask.read_ledger(store).set_index("media_uuid")
    assert sorted(ledger.index) == sorted(cases)
    wrong = {}
    for name, (_, status, reason, attempts) in cases.items():
        row = ledger.loc[name]
        got = (row["status"], None if pd.isna(row["reason"]) else row["reason"],
               int(row["attempts"]))
        if got != (status, reason, attempts):
            wrong[name] = {"expected": (status, reason, attempts), "got": got,
                           "message": row["message"]}
    assert wrong == {}


def test_counts_add_up_to_the_catalog(fault_build):
    cases, frame, result, store = fault_build
    expected_ok = sum(status == "ok" for _, status, _, _ in cases.values())
    assert result.counts["rows"] == len(frame) == len(cases)
    assert sum(result.counts["status"].values()) == len(frame)
    assert sum(result.counts["reasons"].values()) == len(frame)
    assert result.counts["status"]["ok"] == expected_ok == result.images
    reasons: dict[str, int] = {}
    for _, status, reason, _ in cases.values():
        key = f"{status}: {reason}" if reason else status
        reasons[key] = reasons.get(key, 0) + 1
    assert result.counts["reasons"] == dict(sorted(reasons.items()))


def test_store_holds_exactly_the_ok_rows(fault_build):
    cases, frame, result, store = fault_build
    ledger = idigdask.read_ledger(store)
    ok = ledger[ledger["status"] == "ok"].sort_values("image_index")
    ds = idigdask.open_dataset(store)
    assert ds.sizes["image"] == len(ok)
    assert list(ok["image_index"]) == list(range(len(ok)))
    assert list(ds.media_uuid.values) == list(ok["media_uuid"])
    # provenance from the in-memory catalog survives: record ids, not their text form
    records = dict(zip(frame["media_uuid"], frame["record_uuids"]))
    assert list(ds.record_uuid.values) == [records[m][0] for m in ok["media_uuid"]]
    assert (ledger.loc[ledger["status"] != "ok", "image_index"] == -1).all()
    # no image is blank: every stored slot was written
    pixels = ds.images.values
    assert pixels.shape == (len(ok), 48, 48, 3)
    assert all(np.ptp(pixels[i]) > 0 for i in range(len(ok)))


def test_waits_follow_retry_after_and_timeouts(fault_build):
    cases, frame, result, store = fault_build
    seconds = idigdask.read_ledger(store).set_index("media_uuid")["seconds"]
    assert seconds["throttled_429"] >= 0.9                 # Retry-After: 1 was honoured
    assert seconds["never_answers"] >= (RETRIES + 1) * TIMEOUT * 0.9
    assert seconds["slow_past_timeout"] < 10               # never waited for the slow answer


def test_failure_messages_name_the_problem(fault_build):
    cases, frame, result, store = fault_build
    ledger = idigdask.read_ledger(store)
    failed = ledger[ledger["status"] == "failed"]
    assert failed["message"].str.len().gt(0).all()
    # bytes are counted only for bodies that arrived whole (the HTML page)
    fetched = failed["media_uuid"] == "html_page"
    assert failed.loc[~fetched, "nbytes"].eq(0).all()
    assert failed.loc[fetched, "nbytes"].gt(0).all()


def test_cli_ledger_counts_add_up(fault_build):
    cases, frame, result, store = fault_build
    done = subprocess.run([str(BIN / "idigdask"), "ledger", store, "--json", "--failed", "50"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == len(cases)
    assert sum(summary["status"].values()) == summary["rows"]
    assert sum(summary["reasons"].values()) == summary["rows"]
    assert summary["reasons"] == result.counts["reasons"]
    failed = {name for name, (_, status, _, _) in cases.items() if status == "failed"}
    assert set(summary["failed_rows"]) == failed


def test_resume_refetches_only_failed_rows(fault_build, server, dask_client, tmp_path):
    """A second build of the same catalog asks the server only for the failed rows."""
    cases, frame, result, store = fault_build
    cheap = frame[~frame["media_uuid"].isin(
        ["slow_past_timeout", "never_answers"])].reset_index(drop=True)
    ledger = idigdask.read_ledger(store).set_index("media_uuid")
    before = server.requests
    again = build_dataset(cheap, store, size=48, timeout=TIMEOUT, retries=0,
                          max_bytes=MAX_BYTES, dedup=False, client=dask_client, progress=False)
    after = server.requests
    asked = {path for path, n in after.items() if n > before.get(path, 0)}
    failed_paths = {urlsplit(u).path for u, m in zip(cheap["access_uri"], cheap["media_uuid"])
                    if ledger.loc[m, "status"] == "failed"}
    assert asked and asked <= failed_paths
    assert again.images == result.images
    # the ledger describes the latest catalog: the two rows left out are retired
    assert again.counts["rows"] == len(cheap) == len(cases) - 2
    every = idigdask.read_ledger(store, retired=True)
    assert sorted(every.loc[every["retired"], "media_uuid"]) == ["never_answers", "slow_past_timeout"]
