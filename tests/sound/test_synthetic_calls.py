"""The synthetic animal-call recordings and their GUODA-schema catalog.

Determinism, that every format decodes at its rate and channel count, that the
catalog reads as ``sounds`` with balanced labels joined through the specimens, that
the call types are told apart by their temporal structure, that the intro is there
when asked, and that the broken files are there when asked.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import idigdask
from idigdask.errors import UserError
from idigdask.synthetic_calls import (FAULTS, FORMATS, KINDS, MIME_TYPES, call, encode_sound,
                                      write_call_catalog)

N = 48


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return write_call_catalog(tmp_path_factory.mktemp("calls"), n=N, seed=3, faults=True)


@pytest.fixture(scope="module")
def recordings(catalog) -> pd.DataFrame:
    return pd.read_csv(catalog.parent / "recordings.csv", keep_default_na=False)


def _file(catalog: Path, row) -> Path:
    return catalog.parent / "sounds" / f"{row.media_uuid}.{row.format}"


def band_energy(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spectrum = np.fft.rfft(x)
    freq = np.fft.rfftfreq(x.size, 1.0 / rate)
    return float((np.abs(spectrum[(freq >= lo) & (freq <= hi)]) ** 2).sum())


def pulse_score(x: np.ndarray, rate: int) -> float:
    """Share of the 1.2-6 kHz band's envelope modulation at 12-45 Hz (a trill's pulses)."""
    if x.ndim == 2:
        x = x.mean(axis=1)
    spectrum = np.fft.rfft(x)
    freq = np.fft.rfftfreq(x.size, 1.0 / rate)
    band = np.fft.irfft(spectrum * ((freq > 1200) & (freq < 6000)), x.size)
    hop = int(rate * 0.005)
    frames = band[:band.size // hop * hop].reshape(-1, hop)
    envelope = np.sqrt((frames ** 2).mean(axis=1))
    power = np.abs(np.fft.rfft(envelope - envelope.mean())) ** 2
    mod = np.fft.rfftfreq(envelope.size, 0.005)
    return float(power[(mod > 12) & (mod < 45)].sum() / power[(mod > 1) & (mod < 45)].sum())


# --------------------------------------------------------------------------- call()


def test_a_call_is_float32_mono_in_range_and_as_long_as_asked():
    for kind in KINDS:
        x = call(kind, seed=1, rate=16000, duration=3.0)
        assert x.dtype == np.float32 and x.shape == (48000,)
        assert 0.2 < np.abs(x).max() <= 0.9
        assert np.array_equal(np.round(x * 32767.0), x * 32767.0)  # on the 16-bit grid


def test_the_same_seed_gives_the_same_samples_and_another_seed_others():
    for kind in KINDS:
        a = call(kind, seed=11, rate=22050, duration=2.0, intro=True, leading_silence=0.3)
        b = call(kind, seed=11, rate=22050, duration=2.0, intro=True, leading_silence=0.3)
        assert a.tobytes() == b.tobytes()
        other = call(kind, seed=12, rate=22050, duration=2.0, intro=True, leading_silence=0.3)
        assert other.size != a.size or not np.array_equal(other, a)
    assert not np.array_equal(call("whistle", seed=5, duration=2.0),
                              call("trill", seed=5, duration=2.0))


def test_the_same_samples_give_the_same_file_bytes_in_every_format():
    x = call("trill", seed=2, rate=22050, duration=1.5)
    y = call("trill", seed=3, rate=22050, duration=1.5)
    for fmt in FORMATS:
        for channels in (1, 2):
            first = encode_sound(x, 22050, fmt, channels=channels)
            assert encode_sound(x, 22050, fmt, channels=channels) == first, (fmt, channels)
            assert encode_sound(y, 22050, fmt, channels=channels) != first


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_decodes_at_its_rate_and_channel_count(fmt):
    for rate, channels in ((16000, 1), (22050, 2), (44100, 1), (48000, 2)):
        x = call("whistle", seed=rate, rate=rate, duration=1.0)
        decoded, got_rate = sf.read(io.BytesIO(encode_sound(x, rate, fmt, channels=channels)),
                                    always_2d=True)
        assert got_rate == rate and decoded.shape[1] == channels
        assert abs(decoded.shape[0] - x.size) <= 0.05 * x.size
        if fmt in ("wav", "flac"):  # lossless on the 16-bit grid
            assert np.abs(decoded[:, 0] - x).max() < 1e-4
        if channels == 2:  # the two channels differ, a little
            left, right = decoded[:, 0], decoded[:, 1]
            assert not np.array_equal(left, right) and np.corrcoef(left, right)[0, 1] > 0.5


def test_a_bad_kind_rate_or_channel_count_is_a_user_error():
    with pytest.raises(UserError, match="kind"):
        call("bark", seed=0)
    with pytest.raises(UserError, match="MP3"):
        encode_sound(np.zeros(100, np.float32), 44000, "mp3")
    with pytest.raises(UserError, match="channels"):
        encode_sound(np.zeros(100, np.float32), 16000, "wav", channels=3)
    with pytest.raises(UserError, match="format"):
        encode_sound(np.zeros(100, np.float32), 16000, "aiff")


def test_the_intro_puts_voice_energy_at_100_to_300_hz_in_the_first_second():
    rate = 16000
    for kind in KINDS:
        for seed in range(4):
            with_intro = call(kind, seed=seed, rate=rate, intro=True)
            without = call(kind, seed=seed, rate=rate, intro=False)
            ratio = (band_energy(with_intro[:rate], rate, 100, 300)
                     / band_energy(without[:rate], rate, 100, 300))
            assert ratio > 3, (kind, seed, ratio)
            # the calls themselves follow the intro and its pause, unchanged in structure
            assert with_intro.size > without.size + int(1.6 * rate)


def test_leading_silence_is_near_silent():
    x = call("trill", seed=4, rate=16000, leading_silence=0.5)
    assert x.size == int(6.5 * 16000)
    assert np.abs(x[:8000]).max() < 2e-3 < np.abs(x[8000:]).max()


def test_whistles_and_trills_are_told_apart_by_their_pulses():
    scores = {kind: [pulse_score(call(kind, seed=s, rate=16000, snr_db=6.0 + s), 16000)
                     for s in range(8)] for kind in ("whistle", "trill")}
    assert max(scores["whistle"]) < 0.3 < min(scores["trill"])


def test_croaks_are_low():
    rate = 16000
    for seed in range(5):
        low = {k: band_energy(x := call(k, seed=seed, rate=rate), rate, 250, 1300)
               / band_energy(x, rate, 250, 7000) for k in KINDS}
        assert low["croak"] > 0.6 > max(low["whistle"], low["trill"]), low


# --------------------------------------------------------------------------- the catalog


def test_the_catalog_is_guoda_schema_with_sounds_rows(catalog, recordings):
    media = pd.read_parquet(catalog)
    assert list(media.columns) == list(idigdask.synthetic.GUODA_COLUMNS)
    assert len(media) == N + len(FAULTS) == len(recordings)
    assert set(media["mediatype"]) == {"sounds"} and set(media["type"]) == {"sound"}
    assert set(media["format"]) == set(MIME_TYPES.values())
    assert media["recordset"].nunique() == 3
    assert (media["recordset"].to_numpy()[:-1] <= media["recordset"].to_numpy()[1:]).sum() \
        >= len(media) - 3  # in recordset blocks, as a dump is
    truth = recordings.set_index("media_uuid")
    for row in media.itertuples():
        fmt = truth.loc[row.uuid, "format"]
        assert row.format == MIME_TYPES[fmt] and row.data["dcterms:format"] == row.format
        assert row.accessuri.endswith(f"/sounds/{row.uuid}.{fmt}")
        assert list(row.records) == [truth.loc[row.uuid, "record_uuid"]]
        path = Path(row.accessuri)
        if path.exists():
            assert row.data["ac:hashValue"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_catalog_keeps_sounds_when_asked(catalog):
    default = idigdask.read_catalog(str(catalog)).compute()
    assert set(default["excluded"]) == {"unsupported_media_type:sounds"}
    sounds = idigdask.read_catalog(str(catalog), media_type="sounds").compute()
    assert len(sounds) == N + len(FAULTS) and sounds["excluded"].isna().all()


def test_labels_join_through_the_specimens_balanced(catalog, recordings):
    labelled = idigdask.attach_labels(
        idigdask.read_catalog(str(catalog), media_type="sounds"),
        str(catalog.parent / "labels.csv"), label="call").compute()
    assert labelled["excluded"].isna().all() and labelled["label"].notna().all()
    good = labelled[labelled["media_uuid"].isin(recordings.loc[recordings.fault == "", "media_uuid"])]
    assert good["label"].value_counts().to_dict() == {"whistle": N // 2, "trill": N // 2}
    truth = recordings.set_index("media_uuid")["call"]
    assert (labelled["label"].to_numpy() == truth.loc[labelled["media_uuid"]].to_numpy()).all()
    per_specimen = recordings.groupby("record_uuid")
    assert (per_specimen["call"].nunique() == 1).all()
    assert (per_specimen.size() > 1).sum() >= 3  # a split by specimen matters


def test_the_recordings_mix_formats_rates_channels_and_intros(catalog, recordings):
    good = recordings[recordings.fault == ""]
    assert good["format"].value_counts().to_dict() == {f: N // 4 for f in FORMATS}
    assert good["rate"].nunique() >= 3 and set(good["channels"]) == {1, 2}
    assert (good.groupby("call")["intro"].sum() == round(N // 2 * 0.3)).all()
    for row in good.itertuples():
        info = sf.info(str(_file(catalog, row)))
        assert (info.samplerate, info.channels) == (row.rate, row.channels)


def test_the_kinds_are_told_apart_in_the_written_files(catalog, recordings):
    good = recordings[recordings.fault == ""]
    right = 0
    for row in good.itertuples():
        x, rate = sf.read(str(_file(catalog, row)))
        right += (pulse_score(x, rate) > 0.3) == (row.call == "trill")
    assert right / len(good) > 0.9


def test_the_faults_are_there_when_asked(catalog, recordings):
    faults = recordings[recordings.fault != ""].set_index("fault")
    assert sorted(faults.index) == sorted(FAULTS)
    path = {f: _file(catalog, row) for f, row in zip(faults.index, faults.itertuples())}
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path["truncated"]))
    assert path["html_page"].suffix == ".mp3"
    assert path["html_page"].read_bytes().startswith(b"<!DOCTYPE html>")
    assert path["empty"].stat().st_size == 0
    silent, _ = sf.read(str(path["silent"]))
    assert silent.size and not silent.any()
    assert sf.info(str(path["absurd_rate"])).samplerate == 4
    assert not path["missing"].exists()


def test_the_same_seed_writes_the_same_files(tmp_path):
    def written(folder: Path, seed: int) -> tuple[dict[str, str], set[str]]:
        write_call_catalog(folder, n=6, seed=seed, duration=1.0, faults=True)
        hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted((folder / "sounds").iterdir())}
        truth = pd.read_csv(folder / "recordings.csv", keep_default_na=False)
        good = {hashes[f"{r.media_uuid}.{r.format}"] for r in truth.itertuples() if not r.fault}
        return hashes, good

    first, good = written(tmp_path / "a", 1)
    assert written(tmp_path / "b", 1)[0] == first
    for table in ("labels.csv", "recordings.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    assert written(tmp_path / "c", 2)[1].isdisjoint(good)
