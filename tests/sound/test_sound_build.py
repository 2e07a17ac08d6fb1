"""The sound route through the real build, store, feed, training and prediction.

Synthetic call recordings (WAV, FLAC, OGG, MP3 at several rates, some stereo, some
with a spoken introduction, a few broken on purpose) are built into a store of
spectrogram clips on the session's LocalCluster, read from local files and over a
loopback HTTP server that misbehaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """24 good recordings and one of each fault, with their truth table."""
    from idigdask.synthetic_calls import write_call_catalog

    folder = tmp_path_factory.mktemp("calls")
    media = write_call_catalog(folder, n=24, seed=3, faults=True, duration=4.0, n_jobs=1)
    truth = pd.read_csv(folder / "recordings.csv")
    return media, truth


def _catalog(media: Path):
    from idigdask import attach_labels, read_catalog

    catalog = read_catalog(str(media), media_type="sounds")
    return attach_labels(catalog, str(media.parent / "labels.csv"), on="record_uuid",
                         label="call")


@pytest.fixture(scope="module")
def store(calls, tmp_path_factory, dask_client):
    from idigdask import build_dataset

    media, _ = calls
    path = tmp_path_factory.mktemp("store") / "calls.zarr"
    result = build_dataset(_catalog(media), str(path), media="sounds", trim="intro",
                           client=dask_client, progress=False)
    return path, result


def test_every_recording_is_accounted_for(calls, store):
    from idigdask import read_ledger

    media, truth = calls
    path, result = store
    ledger = read_ledger(str(path)).merge(truth, on="media_uuid", how="left")
    assert len(ledger) == len(truth) == result.counts["rows"]
    reason = dict(zip(ledger["fault"].fillna(""), ledger["reason"]))
    assert reason["html_page"] == "not_audio"
    assert reason["empty"] == "empty"
    assert reason["silent"] == "silent"
    assert reason["absurd_rate"] == "bad_sample_rate"
    assert reason["missing"] == "not_found"
    # the FLAC cut to 40 %: libsndfile stops at the cut; what came before is kept, and said
    cut = ledger[ledger["fault"] == "truncated"].iloc[0]
    assert (cut["status"], cut["reason"]) in {("ok", None), ("failed", "corrupt")}
    if cut["status"] == "ok":
        assert "truncated" in (cut["warnings"] or "")
    good = ledger[ledger["fault"].isna()]
    assert (good["status"] == "ok").all(), good[good["status"] != "ok"][["reason", "message"]]
    assert result.summary()["clips"] == result.images


def test_the_store_holds_each_recordings_clips_with_their_offsets(calls, store):
    from idigdask import open_dataset, read_ledger

    _, truth = calls
    path, result = store
    ds = open_dataset(str(path))
    assert ds.attrs["media"] == "sounds"
    specs = ds["spectrograms"]
    assert specs.dims == ("clip", "mel", "time") and specs.dtype == np.uint8
    assert specs.shape == (result.images, 64, 201)
    ledger = read_ledger(str(path))
    ok = ledger[ledger["status"] == "ok"].sort_values("image_index")
    # the recordings' clips are consecutive, in catalog order, and counted by the ledger
    assert ok["image_index"].tolist() == np.r_[0, np.cumsum(ok["samples"])[:-1]].tolist()
    assert int(ok["samples"].sum()) == result.images
    media = np.asarray(ds["media_uuid"].values).astype(object).astype(str)
    offsets = np.asarray(ds["offset"].values)
    rates = dict(zip(truth["media_uuid"], truth["rate"]))
    for row in ok.itertuples():
        span = slice(row.image_index, row.image_index + row.samples)
        assert set(media[span]) == {row.media_uuid}
        steps = np.diff(offsets[span])
        assert np.allclose(steps, 1.0), steps  # the default hop
        assert offsets[span][0] >= 0 and offsets[span][-1] < row.duration
        assert set(np.asarray(ds["source_rate"].values)[span]) == {rates[row.media_uuid]}
    # a spoken introduction is cut (its first clip starts after it) where its pause
    # stands out of the noise: all but the noisiest; recordings without one lose at
    # most their leading silence
    good = truth[truth["fault"].isna()].set_index("media_uuid")
    first = pd.Series(offsets, index=media).groupby(level=0).min()
    intro = good.index[good["intro"].astype(bool)]
    assert (first[intro] > 0.9).mean() >= 0.75, first[intro]
    plain = good.index[~good["intro"].astype(bool)]
    assert (first[plain] <= good.loc[plain, "leading_silence"] + 0.5).all(), first[plain]
    # channel statistics of the one spectrogram channel
    assert len(ds.attrs["channel_mean"]) == 1 and 0 < ds.attrs["channel_std"][0] < 128
    labels = np.asarray(ds["label"].values).astype(object).astype(str)
    assert set(labels) == {"whistle", "trill"}


def test_a_resume_adds_nothing_and_an_extension_gives_the_same_bytes(calls, store, tmp_path,
                                                                     dask_client):
    from idigdask import build_dataset, open_dataset

    media, _ = calls
    path, first = store
    again = build_dataset(_catalog(media), str(path), media="sounds", trim="intro",
                          client=dask_client, progress=False)
    # only the failed rows are tried again (retry_failed), and they fail again
    assert again.processed == first.counts["status"]["failed"]
    assert again.images == first.images and again.counts == first.counts
    # half the catalog, then all of it: the store a single build writes
    catalog = _catalog(media).compute()
    half = tmp_path / "half.zarr"
    build_dataset(catalog.iloc[:len(catalog) // 2], str(half), media="sounds", trim="intro",
                  client=dask_client, progress=False)
    build_dataset(catalog, str(half), media="sounds", trim="intro", client=dask_client,
                  progress=False)
    whole, grown = open_dataset(str(path)), open_dataset(str(half))
    assert np.array_equal(whole["spectrograms"].values, grown["spectrograms"].values)
    for name in ("media_uuid", "offset", "label"):
        assert np.array_equal(whole[name].values, grown[name].values), name


def test_a_store_refuses_other_media_and_other_sound_options(calls, store, dask_client):
    from idigdask import build_dataset
    from idigdask.errors import UserError

    media, _ = calls
    path, _ = store
    with pytest.raises(UserError, match="store of sounds, not of images"):
        build_dataset(_catalog(media), str(path), client=dask_client, progress=False)
    with pytest.raises(UserError, match=r"other sound options \(n_mels: 64 -> 32"):
        build_dataset(_catalog(media), str(path), media="sounds", trim="intro", n_mels=32,
                      client=dask_client, progress=False)


def test_recordings_over_a_misbehaving_server(calls, tmp_path, dask_client):
    from idigdask import build_dataset, read_ledger
    from idigdask.testing.media_server import MediaServer

    media, truth = calls
    good = truth[truth["fault"].isna()].head(6)
    ext = {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"}
    with MediaServer(media.parent) as server:
        files = [f"sounds/{u}.{ext[f]}" for u, f in zip(good["media_uuid"], good["format"])]
        uris = [server.url_for(files[0]),
                server.url_for(f"fault/fail/503/2/{files[1]}"),   # recovered by retries
                server.url_for(f"fault/short/{files[2]}"),        # half the body: refetched
                server.url_for("fault/html/call.mp3"),            # a portal's error page
                server.url_for("fault/status/404/call.wav"),
                server.url_for(files[3])]
        table = pd.DataFrame({"media_uuid": [f"m{i}" for i in range(len(uris))],
                              "access_uri": uris, "excluded": [None] * len(uris)})
        result = build_dataset(table, str(tmp_path / "http.zarr"), media="sounds",
                               retries=3, client=dask_client, progress=False)
    ledger = read_ledger(str(tmp_path / "http.zarr")).set_index("media_uuid")
    assert ledger.loc["m0", "status"] == ledger.loc["m1", "status"] == "ok"
    assert ledger.loc["m1", "attempts"] == 3
    assert ledger.loc["m2", "status"] == "failed" and ledger.loc["m2", "reason"] == "truncated"
    assert ledger.loc["m3", "reason"] == "not_audio"
    assert ledger.loc["m4", "reason"] == "http_404"
    assert ledger.loc["m5", "status"] == "ok"
    assert result.counts["rows"] == 6


@pytest.mark.slow
def test_train_evaluate_and_predict_recordings(calls, store, tmp_path, dask_client):
    import idigdask

    media, truth = calls
    path, built = store
    model_dir = tmp_path / "model"
    trained = idigdask.train(str(path), str(model_dir), label="label", epochs=3,
                             learning_rate=2e-3, batch_size=16, client=dask_client)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"] == "calls" and config["media"] == "sounds"
    assert config["image_shape"] == [64, 201, 1]
    split = pd.read_parquet(model_dir / "split.parquet")
    # specimen-level: a recording's clips, and a specimen's recordings, share a split
    assert split.groupby("media_uuid")["split"].nunique().max() == 1
    assert split.groupby("record_uuid")["split"].nunique().max() == 1
    assert trained.epochs == 3

    metrics = idigdask.evaluate(str(model_dir), str(path), out=str(tmp_path / "report"))
    test = split[split["split"] == "test"]
    assert metrics["n"] == len(test)
    assert metrics["recordings"]["n"] == test["media_uuid"].nunique()
    assert (tmp_path / "report" / "worst.png").stat().st_size > 5000  # spectrograms drawn

    per_recording = idigdask.predict(str(model_dir), str(path), out=None, client=dask_client)
    assert per_recording["media_uuid"].is_unique
    assert int(per_recording["clips"].sum()) == built.images
    scores = per_recording[["score_trill", "score_whistle"]].to_numpy()
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert set(per_recording["predicted"].dropna()) <= {"trill", "whistle"}

    # the same model over the catalog: fetched, cut and scored, a row per recording
    from_catalog = idigdask.predict(str(model_dir), str(media), out=None, client=dask_client)
    assert len(from_catalog) == len(truth)
    merged = from_catalog.merge(per_recording, on="media_uuid", suffixes=("", "_store"))
    assert (merged["status"] == "ok").all() and len(merged) == len(per_recording)
    assert np.allclose(merged["score_trill"], merged["score_trill_store"], atol=1e-4)
    failed = from_catalog[from_catalog["status"] == "failed"]
    assert set(failed["reason"]) >= {"not_audio", "empty", "silent", "not_found"}


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "idigdask"), *argv], capture_output=True, text=True,
                          timeout=180)


def test_cli_builds_sounds_and_names_its_mistakes(calls, tmp_path):
    media, truth = calls
    out = tmp_path / "cli.zarr"
    done = _cli("build", str(media), "-o", str(out), "--media", "sounds", "--trim", "silence",
                "--n-mels", "32", "--fmax", "6000", "--no-progress", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == len(truth) and summary["clips"] > 0
    from idigdask import open_dataset

    ds = open_dataset(str(out))
    assert ds["spectrograms"].shape[1:] == (32, 201)
    assert ds.attrs["sound"]["fmax"] == 6000
    for argv, flag in ((["--window", "0"], "--window"), (["--hop", "0.001"], "--hop"),
                       (["--fmax", "9000"], "--fmax"), (["--n-mels", "32"], None)):
        bad = _cli("build", str(media), "-o", str(out), "--media", "sounds", *argv,
                   "--no-progress")
        assert bad.returncode == 2, (argv, bad.stderr)
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
        if flag:
            assert flag in lines[0], lines[0]


def test_the_data_quality_report_of_a_store_of_sounds(calls, store, tmp_path, dask_client):
    from idigdask import quality_report

    _, truth = calls
    path, built = store
    report = quality_report(str(path), tmp_path / "quality", client=dask_client)
    assert report["images"] == built.images and report["rows"] == len(truth)
    assert report["status"]["failed"] == 5
    assert (tmp_path / "quality" / "samples.png").stat().st_size > 10_000  # spectrograms
    assert "not_audio" in (tmp_path / "quality" / "index.html").read_text()
