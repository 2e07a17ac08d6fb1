"""The sound core (idigdask.audio): decoding real files of each format, the log-mel
transform against librosa, resampling, trimming, the clip grid, every fault reason made
as real bytes, and the options' checks."""

from __future__ import annotations

import dataclasses
import io
import struct

import dask
import librosa
import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from idigdask import audio
from idigdask.audio import (SOUND_REASONS, Clips, SoundOptions, clip_starts, decode_audio, dequantize,
                            log_mel, mel_filterbank, process_sound_bytes, quantize, resample, trim_start)
from idigdask.config import DEFAULTS_FILE
from idigdask.errors import MediaError
from idigdask.options import OptionError

FORMATS = [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
           ("MP3", "MPEG_LAYER_III")]
RATES = [8000, 22050, 44100, 48000]


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def outcome(data: bytes, **options) -> tuple[str, Clips | MediaError]:
    """``("ok", clips)`` or ``(reason, error)``; any other exception fails the test."""
    try:
        return "ok", process_sound_bytes(data, SoundOptions(**options))
    except MediaError as error:
        assert error.reason in SOUND_REASONS, error
        return error.reason, error


def stereo_tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    left = tone(freq, seconds, rate)
    return np.stack([left, 0.5 * left], axis=1)


@pytest.fixture(scope="module")
def wav_3s() -> bytes:
    return encode(stereo_tone(440, 3.0, 22050), 22050, "WAV", "PCM_16")


# --------------------------------------------------------------------------- the transform


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 512, 64, 50.0, None), (22050, 1024, 128, 0.0, 8000.0), (8000, 256, 40, 100.0, 3500.0)])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == (n_mels, 1 + n_fft // 2) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    assert mel_filterbank(sr, n_fft, n_mels, fmin, fmax) is ours  # cached
    assert not ours.flags.writeable


@pytest.mark.parametrize("sr, n_fft, hop_length, n_mels, fmax", [
    (16000, 512, 160, 64, None), (22050, 1024, 256, 96, 9000.0)])
def test_log_mel_of_a_chirp_is_librosas(sr, n_fft, hop_length, n_mels, fmax):
    options = SoundOptions(sample_rate=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                           fmax=fmax, hop=hop_length * 100 / sr, normalize="recording")
    y = (0.5 * librosa.chirp(fmin=80, fmax=sr * 0.45, sr=sr, duration=2.5)).astype(np.float32)
    ours = log_mel(y, options)
    power = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                           fmin=options.fmin, fmax=fmax or sr / 2, power=2.0,
                                           pad_mode="reflect")
    theirs = librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=None)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert ours.max() == 0.0
    kept = theirs > -options.top_db  # what quantize keeps; below, float32 rounding of tiny powers
    np.testing.assert_allclose(ours[kept], theirs[kept], atol=0.01)
    np.testing.assert_allclose(np.maximum(ours, -80), np.maximum(theirs, -80), atol=0.05)


def test_normalize_none_is_full_scale():
    """0 dB: a full-scale sine in the band most sensitive to one; levels follow amplitude."""
    options = SoundOptions(normalize="none")
    peaks = [float(log_mel(tone(k * 16000 / 512, 0.5, 16000, 1.0), options)[:, 5:-5].max())
             for k in range(4, 30)]  # 125 to 906 Hz
    assert abs(max(peaks)) < 0.05  # below 1 kHz the Slaney filters are equally tall
    assert min(peaks) > -3
    high = tone(4000, 0.5, 16000, 1.0)
    assert float(log_mel(high, options).max()) < -3  # wider bands answer less to one sine
    quiet = float(log_mel(0.1 * high, options).max()) - float(log_mel(high, options).max())
    assert abs(quiet + 20) < 0.01


def test_quantize_and_dequantize():
    db = np.linspace(-100, 5, 1000)
    q = quantize(db, 80.0)
    assert q.dtype == np.uint8 and q[0] == 0 and q[-1] == 255
    inside = (db >= -80) & (db <= 0)
    assert np.abs(dequantize(q, 80.0)[inside] - db[inside]).max() <= 80 / 255 / 2 + 1e-5
    assert quantize(np.array([np.nan, -np.inf, np.inf]), 80.0).tolist() == [0, 0, 255]
    assert dequantize(np.array([0, 255], np.uint8), 60.0).tolist() == [-60.0, 0.0]


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt, subtype", FORMATS)
def test_each_format_rate_and_layout_decodes(fmt, subtype, rate, channels):
    freq = 2400.0 if rate == 8000 else 3000.0
    samples = tone(freq, 3.0, rate) if channels == 1 else stereo_tone(freq, 3.0, rate)
    reason, clips = outcome(encode(samples, rate, fmt, subtype), trim="none")
    assert reason == "ok", clips
    assert clips.source_rate == rate and clips.channels == channels
    assert abs(clips.duration - 3.0) < 1e-6 and clips.warnings == ()
    assert clips.spectrograms.shape == (2, 64, 201) and clips.spectrograms.dtype == np.uint8
    assert clips.offsets.tolist() == [0.0, 1.0] and clips.offsets.dtype == np.float64
    expected = int(np.argmax(mel_filterbank(16000, 512, 64, 50.0)[:, round(freq * 512 / 16000)]))
    loudest = int(np.argmax(clips.spectrograms.astype(float).mean(axis=(0, 2))))
    assert abs(loudest - expected) <= 1
    assert clips.spectrograms[:, expected - 1:expected + 2].max() == 255


def test_decode_audio_mixes_to_mono_float32():
    stereo = np.stack([tone(440, 1.0, 44100), np.zeros(44100, np.float32)], axis=1)
    samples, rate, channels = decode_audio(encode(stereo, 44100, "WAV", "FLOAT"), SoundOptions())
    assert samples.dtype == np.float32 and samples.shape == (44100,) and (rate, channels) == (44100, 2)
    np.testing.assert_allclose(samples, stereo[:, 0] / 2, atol=1e-7)
    pcm, _, _ = decode_audio(encode(stereo, 44100, "WAV", "PCM_16"), SoundOptions())
    assert np.array_equal(pcm, sf.read(io.BytesIO(encode(stereo, 44100, "WAV", "PCM_16")),
                                       dtype="float32")[0].mean(axis=1))


def test_the_same_tone_through_wav_and_flac_is_identical():
    # int16 samples: libsndfile's float to int16 conversion differs between the two writers
    samples = np.round(stereo_tone(1000, 4.3, 44100) * 32767).astype(np.int16)
    wav = outcome(encode(samples, 44100, "WAV", "PCM_16"))[1]
    flac = outcome(encode(samples, 44100, "FLAC", "PCM_16"))[1]
    assert np.array_equal(wav.spectrograms, flac.spectrograms)
    assert wav.offsets.tolist() == flac.offsets.tolist() and wav.sha256 != flac.sha256


def test_clip_grid_offsets_and_padding():
    rate = 16000
    recording = np.concatenate([np.zeros(rate // 2, np.float32), tone(1000, 5.0, rate)])
    data = encode(recording, rate, "WAV", "FLOAT")
    clips = outcome(data)[1]
    assert clips.trimmed == 0.5 and clips.duration == 5.5
    assert clips.offsets.tolist() == [0.5, 1.5, 2.5, 3.5]
    # no overlap: the second of tail past the last full clip is half a window, one more clip
    wide = outcome(data, hop=2.0)[1]
    assert wide.offsets.tolist() == [0.5, 2.5, 4.5]
    last = wide.spectrograms[-1]  # audio to 1 s into the clip (frame 100), then zeros
    assert last.max(axis=0)[:98].min() >= 250 and last[:, 106:].max() == 0
    # shorter than one window: one clip, zero padding quantized to 0 (not -inf, not NaN)
    short = outcome(encode(tone(1000, 1.2, rate), rate))[1]
    assert short.offsets.tolist() == [0.0] and short.spectrograms.shape == (1, 64, 201)
    only = short.spectrograms[0]
    assert only.max(axis=0)[1:118].min() >= 250 and only[:, 126:].max() == 0
    # the clips are slices of one STFT: an overlapping clip's frames are its neighbour's
    whole = outcome(data, normalize="recording")[1].spectrograms
    assert np.array_equal(whole[0][:, 100:], whole[1][:, :101])


def test_clip_starts():
    options = SoundOptions()
    assert clip_starts(0, 16000, options).tolist() == []
    assert clip_starts(100, 16000, options).tolist() == [0]
    assert clip_starts(32000, 16000, options).tolist() == [0]
    assert clip_starts(48000 + 15999, 16000, options).tolist() == [0, 16000]
    three = SoundOptions(window=2.0, hop=3.0)  # gaps between clips
    assert clip_starts(16000 * 5, 16000, three).tolist() == [0, 48000]
    assert clip_starts(16000 * 4, 16000, three).tolist() == [0, 48000]  # one second of audio in it
    assert clip_starts(16000 * 4 - 1, 16000, three).tolist() == [0]
    half = SoundOptions(hop=2.0)
    assert clip_starts(16000 * 5, 16000, half).tolist() == [0, 32000, 64000]
    assert clip_starts(16000 * 5 - 1, 16000, half).tolist() == [0, 32000]
    assert SoundOptions().clip_shape == (64, 201)


def test_resampling_anti_aliases():
    high = tone(7000, 1.0, 48000)
    down = resample(high, 48000, 8000)
    assert down.dtype == np.float32 and len(down) == 8000
    rms = lambda x: float(np.sqrt(np.mean(np.square(x[500:-500], dtype=np.float64))))  # noqa: E731
    assert 20 * np.log10(rms(down) / rms(high)) < -60
    kept = resample(tone(1000, 1.0, 48000), 48000, 8000)
    assert abs(20 * np.log10(rms(kept) / rms(high))) < 0.1
    assert resample(high, 48000, 48000) is high


# --------------------------------------------------------------------------- trimming


def _introduced(pause: float, lead: float = 0.3, rate: int = 16000) -> np.ndarray:
    """Near silence, a harmonic "voice" of four syllables, a pause, then a trilling call."""
    rng = np.random.default_rng(0)
    t = np.arange(round(1.5 * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 11))
    syllable = np.zeros_like(t)
    for start in (0.0, 0.4, 0.8, 1.2):  # 0.3 s syllables, 0.1 s between
        inside = (t >= start) & (t < start + 0.3)
        syllable[inside] = np.sin(np.pi * (t[inside] - start) / 0.3)
    voice = 0.2 * voice * syllable
    tc = np.arange(3 * rate) / rate
    call = 0.5 * np.sin(2 * np.pi * 4000 * tc) * (0.75 + 0.25 * np.sin(2 * np.pi * 10 * tc))
    parts = [np.zeros(round(lead * rate)), voice, np.zeros(round(pause * rate)), call]
    signal = np.concatenate(parts)
    return (signal + 1e-5 * rng.standard_normal(len(signal))).astype(np.float32)


def test_trim_cuts_leading_silence():
    rate = 16000
    signal = _introduced(0.6)
    rest, cut = trim_start(signal, rate, SoundOptions(trim="silence"))
    assert abs(cut - 0.3) <= 0.02 and len(rest) == len(signal) - round(cut * rate)
    untouched, none = trim_start(signal, rate, SoundOptions(trim="none"))
    assert untouched is signal and none == 0.0


def test_trim_cuts_an_introduction_at_its_pause():
    data = encode(_introduced(0.6), 16000, "WAV", "FLOAT")
    intro = outcome(data, trim="intro")[1]
    assert abs(intro.trimmed - 2.4) <= 0.02
    assert intro.offsets[0] == intro.trimmed
    kept = outcome(data, trim="silence")[1]
    assert abs(kept.trimmed - 0.3) <= 0.02
    assert len(kept.offsets) > len(intro.offsets)
    # a pause shorter than intro_gap ends nothing; a pause after intro_max neither
    short_pause = encode(_introduced(0.2), 16000, "WAV", "FLOAT")
    assert abs(outcome(short_pause, trim="intro")[1].trimmed - 0.3) <= 0.02
    assert abs(outcome(data, trim="intro", intro_max=1.0)[1].trimmed - 0.3) <= 0.02
    # no pause at all: "intro" cuts only the silence
    assert outcome(encode(tone(1000, 3.0, 16000), 16000), trim="intro")[1].trimmed == 0.0


# --------------------------------------------------------------------------- faults


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("data, looks", [
    (b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>", "an HTML page"),
    (b"  <html><head></head><body>Service unavailable</body></html>", "an HTML page"),
    (_jpeg(), "a JPEG image"),
    (np.random.default_rng(7).bytes(6000), "unrecognised binary data"),
    (b'{"error": "not found"}', "JSON text"),
])
def test_not_audio_says_what_it_looks_like(data, looks):
    reason, error = outcome(data)
    assert reason == "not_audio" and looks in error.message


def test_empty_files():
    assert outcome(b"")[0] == "empty"
    assert outcome(encode(np.zeros(0, np.float32), 16000, "WAV"))[0] == "empty"
    assert outcome(encode(np.zeros(0, np.float32), 16000, "OGG"))[0] == "empty"


@pytest.mark.parametrize("fmt, subtype", FORMATS)
def test_truncated_files(fmt, subtype):
    full = encode(stereo_tone(440, 3.0, 22050), 22050, fmt, subtype)
    for cut in (4, 12, 30):  # inside the header
        assert outcome(full[:cut])[0] == "corrupt", cut
    keep = 0.9 if fmt == "OGG" else 0.5  # libvorbis writes few, large pages
    reason, clips = outcome(full[:int(len(full) * keep)])
    assert reason == "ok", clips
    assert len(clips.warnings) == 1 and clips.warnings[0].startswith("truncated: "), clips.warnings
    assert 0.25 < clips.duration < 3.0
    assert outcome(full)[1].warnings == ()
    # what a truncated file gives is the full file's start, exactly for lossless formats
    if fmt in ("WAV", "FLAC"):
        part = decode_audio(full[:int(len(full) * keep)], SoundOptions())[0]
        whole = decode_audio(full, SoundOptions())[0]
        assert np.array_equal(part, whole[:len(part)])


def test_truncated_just_after_the_header_is_corrupt(wav_3s):
    assert outcome(wav_3s[:44])[0] == "corrupt"  # no frame left of the ones declared
    assert outcome(wav_3s[:1000])[0] == "corrupt"  # some, under min_duration
    reason, clips = outcome(wav_3s[:-1])
    assert reason == "ok" and clips.warnings == ("truncated: 66149 of 66150 frames",)


@pytest.mark.parametrize("rate", [4, 10_000_000])
def test_a_patched_sample_rate_is_refused_from_the_header(wav_3s, rate):
    patched = bytearray(wav_3s)
    patched[24:28] = struct.pack("<I", rate)
    reason, error = outcome(bytes(patched))
    assert reason == "bad_sample_rate" and f"{rate} Hz" in error.message


def test_header_limits(wav_3s):
    assert outcome(wav_3s, max_duration=2.5)[0] == "too_long"
    assert outcome(wav_3s, min_duration=3.5)[0] == "too_short"
    assert outcome(encode(tone(440, 0.1, 16000), 16000))[0] == "too_short"
    assert outcome(wav_3s, max_channels=1)[0] == "bad_channels"
    assert outcome(wav_3s, min_rate=44100)[0] == "bad_sample_rate"


def test_silent_recordings():
    assert outcome(encode(np.zeros(32000, np.float32), 16000))[0] == "silent"
    assert outcome(encode(tone(440, 2.0, 16000, amp=1e-4), 16000, "WAV", "FLOAT"))[0] == "silent"  # -80 dBFS
    assert outcome(encode(tone(440, 2.0, 16000, amp=1e-3), 16000, "WAV", "FLOAT"))[0] == "ok"  # -60 dBFS


def test_non_finite_and_wild_samples_are_mended():
    samples = tone(440, 2.0, 16000)
    samples[100:200], samples[300] = np.nan, np.inf
    reason, clips = outcome(encode(samples, 16000, "WAV", "FLOAT"))
    assert reason == "ok" and clips.warnings == ("replaced 101 non-finite samples with 0",)
    samples = tone(440, 2.0, 16000)
    samples[1000:1010] = 1e30
    reason, clips = outcome(encode(samples, 16000, "WAV", "FLOAT"))
    assert reason == "ok" and clips.warnings[0].startswith("clamped 10 samples")


def _flac_of_unknown_length(seconds: float) -> bytes:
    data = bytearray(encode(tone(440, seconds, 16000), 16000, "FLAC"))
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # STREAMINFO total samples: 0
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def test_a_header_without_a_length_is_capped_while_decoding():
    data = _flac_of_unknown_length(6.0)
    reason, clips = outcome(data)
    assert reason == "ok" and clips.duration == 6.0
    reason, error = outcome(data, max_duration=2.0)
    assert reason == "too_long" and "beyond what the header says" in error.message


def test_an_mp3_header_counting_too_few_frames_is_reported():
    data = bytearray(encode(tone(440, 6.0, 16000), 16000, "MP3"))
    tag = data.find(b"Xing")
    data[tag + 8:tag + 12] = struct.pack(">I", 40)  # the frame count of the Xing header
    reason, clips = outcome(bytes(data))
    assert reason == "ok" and clips.duration < 2.0
    assert "the recording may be longer" in clips.warnings[0]


def test_damaged_bytes_raise_only_media_errors():
    rng = np.random.default_rng(1)
    for fmt, subtype in FORMATS:
        full = bytearray(encode(stereo_tone(440, 1.5, 22050), 22050, fmt, subtype))
        for _ in range(6):
            damaged = full.copy()
            where = rng.integers(0, len(full), 8)
            damaged[where[0]:where[0] + 16] = rng.bytes(len(damaged[where[0]:where[0] + 16]))
            for i in where[1:]:
                damaged[i] ^= 0xFF
            outcome(bytes(damaged))  # ok or a MediaError of SOUND_REASONS


def test_memory_errors_are_media_errors(monkeypatch, wav_3s):
    def exhausted(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(audio, "_mel_power", exhausted)
    assert outcome(wav_3s)[0] == "out_of_memory"
    monkeypatch.setattr(audio, "_read_mono", exhausted)
    with pytest.raises(MediaError, match="out_of_memory"):
        decode_audio(wav_3s, SoundOptions())


def test_clips_carry_the_file_hash(wav_3s):
    from idigdask.hashing import sha256_hex

    clips = outcome(wav_3s)[1]
    assert clips.sha256 == sha256_hex(wav_3s) and clips.source_rate == 22050 and clips.channels == 2


# --------------------------------------------------------------------------- options


def test_defaults_are_the_yaml_and_every_key_is_a_field():
    written = yaml.safe_load(DEFAULTS_FILE.read_text())["idigdask"]["sound"]
    with dask.config.set({"idigdask.sound": written}):
        options = SoundOptions()
    keys = set()
    for f in dataclasses.fields(options):
        name = f.metadata["setting"].split(".", 1)[1]
        keys.add(name)
        assert getattr(options, f.name) == written[name], name
    assert keys == set(written)
    with dask.config.set({"idigdask.sound.sample-rate": "22050", "idigdask.sound.hop-length": 245,
                          "idigdask.sound.hop": 0.5}):
        assert SoundOptions().sample_rate == 22050
    assert SoundOptions(fmax="null").fmax is None


@pytest.mark.parametrize("name, value", [
    ("sample_rate", 500), ("sample_rate", "fast"), ("window", 0.01), ("hop", 0.0), ("hop", 0.005),
    ("n_fft", 8), ("hop_length", 0), ("n_mels", 0), ("fmin", 9000.0), ("fmin", -1.0),
    ("fmax", 9000.0), ("top_db", 0.0), ("normalize", "peak"), ("trim", "all"), ("trim_db", 5.0),
    ("intro_gap", 0.0), ("intro_max", -1.0), ("max_duration", 0.0), ("min_duration", -1.0),
    ("max_channels", 0), ("min_rate", 0), ("max_rate", 500), ("silence_dbfs", 1.0)])
def test_options_errors_name_the_option(name, value):
    with pytest.raises(OptionError) as caught:
        SoundOptions(**{name: value})
    assert caught.value.option == name and str(caught.value).startswith(f"{name}: ")
