"""Deterministic synthetic animal-call recordings: the test and demo data of ``sounds``.

The sound counterpart of :mod:`idigdask.synthetic`: no machine of this project reaches
a sound archive, so this module synthesises recordings that exercise the whole route
of iDigBio media records whose ``mediatype`` is ``sounds`` (catalog, fetch, decode,
store, train). Three call types:

``whistle``
    Frequency-modulated whistled notes (sweeps of 0.3-0.8 s between 1.5 and 4.5 kHz,
    rising or falling, with a weak second harmonic), several notes with gaps.
``trill``
    A pulsed trill: bouts of 0.5-2 s of 10-30 ms tone pulses at 15-40 pulses a second
    on a 2-5 kHz carrier. It shares the whistles' band on purpose, so that the two
    are told apart by their temporal structure rather than by frequency alone.
``croak``
    Low, broadband, pulsed croaks (300-1200 Hz), frog-like, for a multi-class task.

Every recording varies: onsets, note counts, frequencies, amplitudes, a pink or brown
background noise over a faint white floor, and now and then a mains hum or broadband
clicks. ``intro=True`` prepends what archive recordings begin with, a spoken
announcement (a voice-like harmonic stack) followed by a near-silent pause.

:func:`write_call_catalog` writes a set of such recordings in mixed formats (WAV,
FLAC, Ogg Vorbis, MP3), sample rates and channel counts with a GUODA-schema media
parquet (written by :func:`idigdask.synthetic.write_guoda`), a label table joined
through the specimen uuids, as :func:`idigdask.synthetic.make_sheets` does, and,
with ``faults=True``, a handful of broken files that a build must ledger.

Everything is seeded: the same arguments give the same samples and the same file
bytes (Ogg streams get a fixed serial number, which libsndfile would otherwise draw
from the clock).
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import multiprocessing
import os
import uuid
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError
from .synthetic import (_LICENSE_LOGO, _NAMESPACE, _RIGHTS, _WEBSTATEMENT, DATA_KEYS,
                        _default_jobs, _write_atomic, write_guoda)

__all__ = ["KINDS", "FORMATS", "MIME_TYPES", "FAULTS", "call", "encode_sound",
           "write_call_catalog"]

#: The call types :func:`call` synthesises.
KINDS = ("whistle", "trill", "croak")
#: File formats :func:`encode_sound` writes: name -> (libsndfile format, subtype).
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}
#: The MIME type a catalog row declares for each format (iDigBio's ``format``).
MIME_TYPES = {"wav": "audio/x-wav", "flac": "audio/flac", "ogg": "audio/ogg",
              "mp3": "audio/mpeg"}
#: The broken files ``write_call_catalog(faults=True)`` adds, one row each.
FAULTS = ("truncated", "html_page", "empty", "silent", "absurd_rate", "missing")

#: Sample rates an MPEG layer III stream can have (MPEG-1, -2 and -2.5).
_MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
_KIND_CODES = {"whistle": 1, "trill": 2, "croak": 3}
#: Two species of each call type, as a sound archive's records would name them.
_SPECIES = {
    "whistle": (("Catharus guttatus (Pallas, 1811)", "Turdidae"),
                ("Poecile atricapillus (Linnaeus, 1766)", "Paridae")),
    "trill": (("Spizella passerina (Bechstein, 1798)", "Passerellidae"),
              ("Junco hyemalis (Linnaeus, 1758)", "Passerellidae")),
    "croak": (("Lithobates catesbeianus (Shaw, 1802)", "Ranidae"),
              ("Lithobates clamitans (Latreille, 1801)", "Ranidae")),
}
_MIN_RATE, _MAX_RATE = 4000, 384000
#: Below this many recordings, worker processes cost more than they save.
_PARALLEL_MIN_RECORDINGS = 40
_OGG_SERIAL = 0x1D16B10  # any fixed value: the stream's identity within the file
_HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>"
              b"<body><h1>Service Unavailable</h1><p>The media server is temporarily "
              b"unable to service your request. Please try again later.</p></body></html>\n")


# --------------------------------------------------------------------------- synthesis


def _envelope(t: np.ndarray, start: float, length: float, ramp: float) -> np.ndarray:
    """A note's amplitude: raised-cosine ramps of ``ramp`` s at both ends, 0 outside."""
    u = t - start
    ramp = max(1e-3, min(ramp, length / 2))
    env = np.clip(np.minimum(u, length - u) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * env)


def _place(rng: np.random.Generator, duration: float, lengths: tuple[float, float],
           gaps: tuple[float, float], most: int) -> list[tuple[float, float]]:
    """Onsets and lengths of up to ``most`` events laid one after another in ``duration``."""
    events: list[tuple[float, float]] = []
    at = rng.uniform(0.05, min(0.8, duration * 0.3))
    while len(events) < most:
        length = rng.uniform(*lengths)
        if at + length > duration - 0.05:
            if not events:  # a short recording still holds one event, shortened
                events.append((at, max(0.05, duration - 0.05 - at)))
            break
        events.append((at, length))
        at += length + rng.uniform(*gaps)
    return events


def _harmonic_ok(freq: np.ndarray, rate: int) -> np.ndarray:
    """1 where a partial lies below 0.45 of the rate, else 0 (no aliased partials)."""
    return (freq < 0.45 * rate).astype(np.float64)


def _whistle(rng: np.random.Generator, t: np.ndarray, rate: int, duration: float
             ) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros_like(t)
    active = np.zeros(t.shape, bool)
    for start, length in _place(rng, duration, (0.3, 0.8), (0.15, 0.9), int(rng.integers(2, 7))):
        lo = rng.uniform(1500.0, 3800.0)
        hi = rng.uniform(min(lo + 500.0, 4500.0), 4500.0)
        f_from, f_to = (lo, hi) if rng.random() < 0.5 else (hi, lo)
        bend = rng.uniform(0.5, 2.0)  # concave, straight or convex sweeps
        vib_depth, vib_rate = rng.uniform(0.0, 60.0), rng.uniform(4.0, 12.0)
        harmonic = rng.uniform(0.08, 0.3)
        level = rng.uniform(0.5, 1.0)
        ramp = rng.uniform(0.02, 0.08)
        i0, i1 = int(start * rate), min(len(t), int((start + length) * rate) + 1)
        seg = t[i0:i1]
        u = np.clip((seg - start) / length, 0.0, 1.0)
        freq = f_from + (f_to - f_from) * u ** bend + vib_depth * np.sin(2 * np.pi * vib_rate * seg)
        phase = 2 * np.pi * np.cumsum(freq) / rate
        env = _envelope(seg, start, length, ramp) * level
        out[i0:i1] += env * (np.sin(phase) + harmonic * _harmonic_ok(2 * freq, rate) * np.sin(2 * phase))
        active[i0:i1] |= env > 0.1 * level
    return out, active


def _trill(rng: np.random.Generator, t: np.ndarray, rate: int, duration: float
           ) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros_like(t)
    active = np.zeros(t.shape, bool)
    for start, length in _place(rng, duration, (0.5, 2.0), (0.3, 1.2), int(rng.integers(1, 4))):
        pulse_rate = rng.uniform(15.0, 40.0)
        period = 1.0 / pulse_rate
        pulse = rng.uniform(0.010, min(0.030, 0.7 * period))
        carrier = rng.uniform(2000.0, 5000.0)
        drift = rng.uniform(-300.0, 300.0)
        sweep = rng.uniform(-250.0, 0.0)  # each pulse a short down-chirp
        harmonic = rng.uniform(0.08, 0.3)
        level = rng.uniform(0.5, 1.0)
        count = max(1, int(length * pulse_rate))
        jitter = rng.normal(0.0, 0.04 * period, count)
        gains = np.clip(rng.normal(1.0, 0.12, count), 0.6, 1.4)
        for k in range(count):
            p0 = start + k * period + jitter[k]
            i0, i1 = max(0, int(p0 * rate)), min(len(t), int((p0 + pulse) * rate) + 1)
            if i1 <= i0:
                continue
            seg = t[i0:i1]
            u = np.clip((seg - p0) / pulse, 0.0, 1.0)
            freq = carrier + drift * (k / count) + sweep * u
            phase = 2 * np.pi * np.cumsum(freq) / rate
            env = np.sin(np.pi * u) ** 2 * level * gains[k]
            out[i0:i1] += env * (np.sin(phase) + harmonic * _harmonic_ok(2 * freq, rate) * np.sin(2 * phase))
            active[i0:i1] |= env > 0.1 * level
    return out, active


def _croak(rng: np.random.Generator, t: np.ndarray, rate: int, duration: float
           ) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros_like(t)
    active = np.zeros(t.shape, bool)
    for start, length in _place(rng, duration, (0.15, 0.5), (0.2, 0.8), int(rng.integers(3, 11))):
        pulse_rate = rng.uniform(40.0, 120.0)
        # a pulse is a few partials spread over 300-1200 Hz: broadband within the band
        partials = rng.uniform(300.0, 1200.0, 7)
        phases = rng.uniform(0.0, 2 * np.pi, 7)
        weights = rng.uniform(0.4, 1.0, 7)
        width = rng.uniform(0.4, 0.8) / pulse_rate  # of each pulse, under its period
        level = rng.uniform(0.5, 1.0)
        ramp = rng.uniform(0.02, 0.05)
        i0, i1 = int(start * rate), min(len(t), int((start + length) * rate) + 1)
        seg = t[i0:i1]
        since = np.mod(seg - start, 1.0 / pulse_rate)  # time since the last pulse began
        # smooth pulses: an abrupt onset would splash clicks over the whole spectrum
        pulses = np.where(since < width, np.sin(np.pi * np.minimum(since / width, 1.0)) ** 2, 0.0)
        tone = sum(w * np.sin(2 * np.pi * f * seg + p) for f, p, w in zip(partials, phases, weights))
        env = _envelope(seg, start, length, ramp) * level
        out[i0:i1] += env * pulses * tone / weights.sum()
        active[i0:i1] |= env > 0.1 * level
    return out, active


_CALLS = {"whistle": _whistle, "trill": _trill, "croak": _croak}


def _voice(rng: np.random.Generator, t: np.ndarray, rate: int, length: float) -> np.ndarray:
    """A spoken-announcement-like sound: a harmonic stack under moving formants."""
    f0 = rng.uniform(100.0, 200.0)
    syllable_rate = rng.uniform(3.0, 6.0)
    knots = int(np.ceil(length * syllable_rate)) + 2
    at = np.arange(knots) / syllable_rate
    f1 = np.interp(t, at, rng.uniform(300.0, 800.0, knots))
    f2 = np.interp(t, at, rng.uniform(900.0, 2200.0, knots))
    strength = np.interp(t, at, rng.uniform(0.3, 1.0, knots))
    # intonation: a slow rise and fall over a declining pitch
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6.3))
                  - 0.05 * t / max(length, 1e-3))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    # formant weights change slowly: computed every 5 ms and interpolated
    coarse = np.arange(0.0, t[-1] + 0.005, 0.005) if t.size else np.zeros(1)
    pitch_c, f1_c, f2_c = (np.interp(coarse, t, v) for v in (pitch, f1, f2))
    cos1, sin_prev, sin_k = 2 * np.cos(phase), np.zeros_like(t), np.sin(phase)
    out = np.zeros_like(t)
    for k in range(1, 31):
        fk = k * pitch_c
        weight = (0.5 + np.exp(-((fk - f1_c) / 150.0) ** 2)
                  + 0.6 * np.exp(-((fk - f2_c) / 200.0) ** 2)) / k  # a voice falls 6 dB an octave
        weight *= fk < 0.45 * min(rate, 9000)  # partials up to 4 kHz, none aliased
        out += np.interp(t, coarse, weight) * sin_k
        sin_prev, sin_k = sin_k, cos1 * sin_k - sin_prev  # sin((k+1)x) from sin(kx), sin((k-1)x)
    syllables = np.abs(np.sin(np.pi * syllable_rate * t)) ** 0.6 * strength
    return out * syllables * _envelope(t, 0.0, length, 0.05)


def _coloured_noise(rng: np.random.Generator, n: int, rate: int, alpha: float) -> np.ndarray:
    """Unit-RMS noise of power spectrum 1/f**alpha (1: pink, 2: brown) above 20 Hz."""
    size = 1 << max(1, n - 1).bit_length()  # a power of two: other lengths can be 20x slower
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freq = np.fft.rfftfreq(size, 1.0 / rate)
    spectrum *= np.maximum(freq, 20.0) ** (-alpha / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, size)[:n]
    return noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)


def _check_call_args(kind: str, seed: int, rate: int, duration: float,
                     leading_silence: float) -> None:
    if kind not in _CALLS:
        raise UserError(f"call kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(rate, (int, np.integer)) or not _MIN_RATE <= rate <= _MAX_RATE:
        raise UserError(f"sample rate must be an integer from {_MIN_RATE} to {_MAX_RATE} Hz, "
                        f"got {rate!r}")
    if not 0.5 <= float(duration) <= 600.0:
        raise UserError(f"duration must be between 0.5 and 600 s, got {duration!r}")
    if not 0.0 <= float(leading_silence) <= 60.0:
        raise UserError(f"leading silence must be between 0 and 60 s, got {leading_silence!r}")


def call(kind: str, *, seed: int, rate: int = 22050, duration: float = 6.0,
         snr_db: float = 15.0, intro: bool = False,
         leading_silence: float = 0.0) -> np.ndarray:
    """Synthesise one recording of an animal call, mono float32 in [-1, 1].

    Parameters
    ----------
    kind : {"whistle", "trill", "croak"}
        The call type (see the module documentation).
    seed : int
        Fixes every random choice: the same arguments give the same samples.
    rate : int, default 22050
        Sample rate in Hz.
    duration : float, default 6.0
        Seconds of the call part (the calls, their background and distractors).
    snr_db : float, default 15.0
        Power of the calls, where they sound, over that of the background noise, in dB.
    intro : bool, default False
        Prepend a spoken-introduction-like segment (1-2.5 s of a voice-like harmonic
        stack, f0 100-200 Hz, under slowly moving formants) and a 0.6-1.2 s pause
        holding only the background noise, as archive recordings begin with an
        announcement.
    leading_silence : float, default 0.0
        Seconds of near-silence (a digital floor some 80 dB down) before everything.

    Returns
    -------
    numpy.ndarray
        ``(samples,)`` float32, peak between 0.25 and 0.9, on the 16-bit grid (each
        value a multiple of 1/32767), so that a PCM_16 file holds it exactly.

    Raises
    ------
    UserError
        An unknown kind, a negative seed, a rate outside 4-384 kHz, or a duration
        outside 0.5-600 s.

    Notes
    -----
    The call's structure, its intro and its noise come from separate streams of
    ``numpy.random.default_rng([seed, kind, stream])``: the same seed gives the same
    calls at every rate, and with or without an intro.

    Examples
    --------
    >>> x = call("trill", seed=3, rate=16000, duration=2.0)
    >>> x.shape, x.dtype, bool(np.abs(x).max() <= 1.0)
    ((32000,), dtype('float32'), True)
    >>> bool((call("trill", seed=3, rate=16000, duration=2.0) == x).all())
    True
    >>> call("whistle", seed=3, rate=16000, duration=2.0, intro=True).size > x.size
    True
    """
    _check_call_args(kind, seed, rate, duration, leading_silence)
    code = _KIND_CODES[kind]
    structure = np.random.default_rng([int(seed), code, 0])
    noise_rng = np.random.default_rng([int(seed), code, 1])
    rate, duration = int(rate), float(duration)

    n_call = int(round(duration * rate))
    t = np.arange(n_call) / rate
    signal, active = _CALLS[kind](structure, t, rate, duration)
    level = float(np.sqrt(np.mean(signal[active] ** 2))) if active.any() else 1.0
    # distractors, drawn from the structure stream so they match across rates
    hum = structure.random() < 0.25
    hum_f, hum_level = float(structure.choice([50.0, 60.0])), structure.uniform(0.03, 0.15)
    clicks = int(structure.integers(1, 6)) if structure.random() < 0.3 else 0
    click_at = structure.uniform(0.0, duration, clicks)
    click_level = structure.uniform(0.5, 1.5, clicks)
    alpha = float(structure.choice([1.0, 2.0]))  # pink or brown background

    lead = int(round(float(leading_silence) * rate))
    voice = np.zeros(0)
    pause = 0
    if intro:
        irng = np.random.default_rng([int(seed), code, 2])
        length = irng.uniform(1.0, 2.5)
        pause = int(round(irng.uniform(0.6, 1.2) * rate))
        tv = np.arange(int(round(length * rate))) / rate
        voice = _voice(irng, tv, rate, length)
        loud = np.abs(voice) > 0.1 * np.abs(voice).max()
        voice *= irng.uniform(0.8, 1.5) * level / max(float(np.sqrt(np.mean(voice[loud] ** 2))), 1e-12)

    body = np.concatenate([voice, np.zeros(pause), signal])
    tb = np.arange(body.size) / rate
    if hum:  # mains hum with its second and third harmonics, under everything
        body += hum_level * level * sum(a * np.sin(2 * np.pi * k * hum_f * tb)
                                        for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    offset = voice.size + pause
    for at, gain in zip(click_at, click_level):
        i0 = offset + int(at * rate)
        width = min(body.size - i0, max(4, int(0.003 * rate)))
        burst = noise_rng.standard_normal(width) * np.exp(-np.arange(width) / (0.0006 * rate))
        body[i0:i0 + width] += gain * level * 2.0 * burst
    noise = _coloured_noise(noise_rng, body.size, rate, alpha)
    noise += 0.05 * noise_rng.standard_normal(body.size)  # a faint white floor: the mic's hiss
    body += noise * level * 10.0 ** (-float(snr_db) / 20.0)

    floor = noise_rng.standard_normal(lead) * 1e-4 * level
    out = np.concatenate([floor, body])
    peak = float(np.abs(out).max()) or 1.0
    out *= structure.uniform(0.25, 0.9) / peak
    # on the 16-bit grid: bytes then do not hinge on the last bits of libm's sin and exp
    return (np.round(np.clip(out, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


# --------------------------------------------------------------------------- encoding

_BIT_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, unreflected, no init/xor).

    zlib's CRC-32 is the reflected form of the same polynomial: fed the bytes
    bit-reversed, started at zero and left un-inverted, it gives the checksum reversed.
    """
    raw = zlib.crc32(page.translate(_BIT_REVERSE), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int = _OGG_SERIAL) -> bytes:
    """The Ogg stream with every page's serial number set to ``serial``, CRCs redone."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS" or pos + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = out[pos + 26]
        size = 27 + segments + sum(out[pos + 27:pos + 27 + segments])
        out[pos + 14:pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22:pos + 26] = bytes(4)
        out[pos + 22:pos + 26] = _ogg_crc(bytes(out[pos:pos + size])).to_bytes(4, "little")
        pos += size
    return bytes(out)


def encode_sound(samples: np.ndarray, rate: int, fmt: str, *, channels: int = 1) -> bytes:
    """Encode samples as the bytes of a sound file, through soundfile (libsndfile).

    Parameters
    ----------
    samples : numpy.ndarray
        ``(frames,)`` mono or ``(frames, channels)`` float samples in [-1, 1].
    rate : int
        Sample rate in Hz (MP3: 8, 11.025, 12, 16, 22.05, 24, 32, 44.1 or 48 kHz).
    fmt : {"wav", "flac", "ogg", "mp3"}
        16-bit PCM WAV, 16-bit FLAC, Ogg Vorbis or MPEG layer III.
    channels : {1, 2}, default 1
        For mono ``samples``: 2 writes a stereo file whose right channel is the left
        one a sample late and 1 dB quieter (a small inter-channel difference, as
        of two microphones). Ignored for 2-D ``samples``.

    Returns
    -------
    bytes
        The file; the same for the same arguments (an Ogg stream's serial number is
        fixed rather than drawn from the clock).

    Raises
    ------
    UserError
        An unknown format or channel count, or a rate MP3 cannot carry.

    Examples
    --------
    >>> import io
    >>> import soundfile as sf
    >>> x = call("whistle", seed=0, rate=16000, duration=1.0)
    >>> data = encode_sound(x, 16000, "flac", channels=2)
    >>> data[:4]
    b'fLaC'
    >>> decoded, rate = sf.read(io.BytesIO(data))
    >>> decoded.shape, rate
    ((16000, 2), 16000)
    >>> encode_sound(x, 16000, "ogg") == encode_sound(x, 16000, "ogg")
    True
    """
    import soundfile as sf

    if fmt not in FORMATS:
        raise UserError(f"sound format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        if channels not in (1, 2):
            raise UserError(f"channels must be 1 or 2, got {channels!r}")
        if channels == 2:
            # one sample late: a mono downmix then loses only the top of the band (a
            # longer delay would comb-filter the calls' own frequencies away)
            right = np.concatenate([np.zeros(min(1, x.size), np.float32), x[:-1]]) * 0.89
            x = np.stack([x, right], axis=1)
    elif x.ndim != 2:
        raise UserError(f"samples must be (frames,) or (frames, channels), got shape {x.shape}")
    rate = int(rate)
    if fmt == "mp3" and rate not in _MP3_RATES:
        raise UserError(f"MP3 cannot carry {rate} Hz; use one of "
                        f"{', '.join(map(str, sorted(_MP3_RATES)))}")
    major, subtype = FORMATS[fmt]
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=major, subtype=subtype)
    data = buf.getvalue()
    return _fix_ogg_serial(data) if fmt == "ogg" else data


def _wav_with_rate(data: bytes, rate: int) -> bytes:
    """A WAV file whose header claims ``rate`` (and the byte rate to match)."""
    out = bytearray(data)
    at = out.find(b"fmt ", 12)
    if at < 0:
        raise ValueError("no fmt chunk")
    block_align = int.from_bytes(out[at + 20:at + 22], "little")
    out[at + 12:at + 16] = int(rate).to_bytes(4, "little")
    out[at + 16:at + 20] = (int(rate) * block_align).to_bytes(4, "little")
    return bytes(out)


# --------------------------------------------------------------------------- a catalog


def _media_uuid(seed: int, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"synthetic-calls:{seed}:{index}:media"))


def _record_uuid(seed: int, specimen: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"synthetic-calls:{seed}:{specimen}:record"))


def _recordset_uuid(seed: int, k: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"synthetic-calls:{seed}:recordset:{k}"))


def _catalog_number(seed: int, specimen: int) -> str:
    return f"SYNSND{seed:03d}-{specimen:07d}"


def _recording_seed(seed: int, index: int) -> int:
    """A recording's own seed: distinct for every (set seed, index) pair."""
    digest = hashlib.sha256(f"synthetic-calls:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _balanced(rng: np.random.Generator, n: int, options: int) -> np.ndarray:
    """``n`` indices into ``options`` choices, as many of each (within one), shuffled."""
    codes = np.empty(n, dtype=np.int64)
    codes[rng.permutation(n)] = np.arange(n) % options
    return codes


def _specimens(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
    """Each recording's specimen number: mostly one recording a specimen, some two or three.

    A specimen's recordings are of one call type (one animal), so that a split by
    specimen keeps them together and a split by recording would leak.
    """
    owner = np.empty(kinds.size, dtype=np.int64)
    groups: list[list[int]] = []
    for k in np.unique(kinds):
        members = [int(i) for i in np.flatnonzero(kinds == k)]
        while members:
            size = int(rng.choice([1, 1, 1, 2, 2, 3]))
            groups.append(members[:size])
            members = members[size:]
    for number, group in enumerate(sorted(groups)):  # numbered by first recording
        owner[group] = number
    return owner


def _check_catalog_args(n: int, seed: int, kinds: Sequence[str], formats: Sequence[str],
                        rates: Sequence[int], intro_fraction: float, recordsets: int,
                        stereo_fraction: float, duration: float) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"number of recordings must be a positive integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise UserError(f"kinds must be distinct names among {', '.join(KINDS)}, got {kinds!r}")
    if not formats or any(f not in FORMATS for f in formats):
        raise UserError(f"formats must be among {', '.join(FORMATS)}, got {formats!r}")
    if not rates or any(not isinstance(r, (int, np.integer)) or not _MIN_RATE <= r <= _MAX_RATE
                        for r in rates):
        raise UserError(f"rates must be integers from {_MIN_RATE} to {_MAX_RATE} Hz, got {rates!r}")
    if "mp3" in formats and not set(rates) & _MP3_RATES:
        raise UserError("none of the rates can be carried by MP3")
    for name, value in (("intro fraction", intro_fraction), ("stereo fraction", stereo_fraction)):
        if not 0.0 <= float(value) <= 1.0:
            raise UserError(f"{name} must be between 0 and 1, got {value!r}")
    if not isinstance(recordsets, (int, np.integer)) or recordsets < 1:
        raise UserError(f"recordsets must be a positive integer, got {recordsets!r}")
    if not 0.625 <= float(duration) <= 480.0:  # each recording is 0.8-1.25 times it
        raise UserError(f"duration must be between 0.625 and 480 s, got {duration!r}")


def _plan(n: int, seed: int, kinds: Sequence[str], formats: Sequence[str],
          rates: Sequence[int], intro_fraction: float, recordsets: int,
          stereo_fraction: float, duration: float) -> list[dict[str, Any]]:
    """What each good recording is: kind, specimen, recordset, format, rate, intro..."""
    rng = np.random.default_rng([int(seed), 7])
    kind_codes = _balanced(rng, n, len(kinds))
    owner = _specimens(rng, kind_codes)
    n_specimens = int(owner.max()) + 1
    specimen_set = _balanced(rng, n_specimens, recordsets)
    fmt_codes = _balanced(rng, n, len(formats))
    intro = np.zeros(n, bool)
    for k in range(len(kinds)):  # as many intros in every class: no label in the intro
        members = np.flatnonzero(kind_codes == k)
        intro[rng.permutation(members)[:int(round(members.size * intro_fraction))]] = True
    plan = []
    for i in range(n):
        fmt = formats[fmt_codes[i]]
        usable = [r for r in rates if fmt != "mp3" or r in _MP3_RATES]
        kind = kinds[kind_codes[i]]
        plan.append({
            "index": i, "kind": kind, "specimen": int(owner[i]),
            "recordset": int(specimen_set[owner[i]]), "format": fmt,
            "rate": int(usable[int(rng.integers(len(usable)))]),
            "channels": 2 if rng.random() < stereo_fraction else 1,
            "intro": bool(intro[i]),
            "leading_silence": round(float(rng.uniform(0.0, 1.0)), 3) if rng.random() < 0.4 else 0.0,
            "snr_db": round(float(rng.uniform(6.0, 20.0)), 2),
            "duration": round(float(duration) * float(rng.uniform(0.8, 1.25)), 2),
            "species": _SPECIES[kind][i % 2], "fault": "",
        })
    return plan


def _write_item(item: dict[str, Any]) -> tuple[str, str] | None:
    """Synthesise, encode and write one row's file; its (sha256, sha1), None if missing."""
    if item["fault"]:
        data = _fault_bytes(item)
    else:
        samples = call(item["kind"], seed=_recording_seed(item["seed"], item["index"]),
                       rate=item["rate"], duration=item["duration"], snr_db=item["snr_db"],
                       intro=item["intro"], leading_silence=item["leading_silence"])
        data = encode_sound(samples, item["rate"], item["format"], channels=item["channels"])
    if data is None:  # a missing file: also when an earlier run wrote one there
        Path(item["path"]).unlink(missing_ok=True)
        return None
    _write_atomic(item["path"], data)
    return hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest()


def _run_jobs(items: list[dict[str, Any]], n_jobs: int) -> list[tuple[str, str] | None]:
    """:func:`_write_item` over every row, in worker processes for a larger set."""
    if n_jobs <= 1 or len(items) < _PARALLEL_MIN_RECORDINGS:
        return [_write_item(item) for item in items]
    # forkserver: safe even when the caller runs threads (a Dask client, a server)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    workers = min(n_jobs, len(items) // (_PARALLEL_MIN_RECORDINGS // 2))
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_write_item, items, chunksize=max(1, len(items) // (workers * 4))))


def _fault_rows(seed: int, n: int, kinds: Sequence[str], n_specimens: int,
                recordsets: int) -> list[dict[str, Any]]:
    """One row per :data:`FAULTS` entry, each of its own labelled specimen."""
    spec = {"truncated": ("flac", 22050, 1), "html_page": ("mp3", 44100, 1),
            "empty": ("wav", 16000, 1), "silent": ("wav", 22050, 1),
            "absurd_rate": ("wav", 22050, 1), "missing": ("ogg", 48000, 2)}
    rows = []
    for j, fault in enumerate(FAULTS):
        kind = kinds[j % len(kinds)]
        fmt, rate, channels = spec[fault]
        rows.append({"index": n + j, "kind": kind, "specimen": n_specimens + j,
                     "recordset": j % recordsets, "format": fmt, "rate": rate,
                     "channels": channels, "intro": False, "leading_silence": 0.0,
                     "snr_db": 15.0, "duration": 5.0, "species": _SPECIES[kind][j % 2],
                     "fault": fault})
    return rows


def _fault_bytes(item: dict[str, Any]) -> bytes | None:
    """The broken file of a fault row; None when it is to be missing."""
    fault, rate = item["fault"], item["rate"]
    if fault == "missing":
        return None
    good = call(item["kind"], seed=_recording_seed(item["seed"], item["index"]), rate=rate,
                duration=item["duration"])
    if fault == "truncated":  # a download cut short: the FLAC decoder loses sync
        full = encode_sound(good, rate, "flac")
        data = full[:int(len(full) * 0.4)]
    elif fault == "html_page":  # a server's error page saved under the media's name
        data = _HTML_PAGE
    elif fault == "empty":
        data = b""
    elif fault == "silent":  # digital silence: decodes, but holds nothing to learn
        data = encode_sound(np.zeros(int(item["duration"] * rate), np.float32), rate, "wav")
    else:  # absurd_rate: a sound whose header claims 4 Hz
        data = _wav_with_rate(encode_sound(good, rate, "wav"), 4)
    return data


def write_call_catalog(folder: str | os.PathLike, n: int = 120, *, seed: int = 0,
                       kinds: Sequence[str] = ("whistle", "trill"),
                       formats: Sequence[str] = ("wav", "flac", "ogg", "mp3"),
                       rates: Sequence[int] = (16000, 22050, 44100, 48000),
                       intro_fraction: float = 0.3, faults: bool = False,
                       recordsets: int = 3, stereo_fraction: float = 0.25,
                       duration: float = 6.0, base_url: str | None = None,
                       n_jobs: int | None = None) -> Path:
    """Write synthetic call recordings with a GUODA-schema catalog and a label table.

    Parameters
    ----------
    folder : str or path-like
        Local folder to write into (created if missing).
    n : int, default 120
        Number of good recordings, as many of each kind (within one).
    seed : int, default 0
        Seed of the set: the same arguments write the same bytes.
    kinds : sequence of str, default ("whistle", "trill")
        The call types, the labels (add ``"croak"`` for a three-class task).
    formats : sequence of str, default ("wav", "flac", "ogg", "mp3")
        File formats, dealt as evenly as ``kinds`` (see :func:`encode_sound`).
    rates : sequence of int, default (16000, 22050, 44100, 48000)
        Sample rates drawn from (MP3 files only from those MP3 can carry).
    intro_fraction : float, default 0.3
        Fraction of each kind's recordings that begin with a spoken introduction.
    faults : bool, default False
        Also add one row of each of :data:`FAULTS`: a truncated FLAC, an HTML error
        page saved as ``.mp3``, a zero-length ``.wav``, a silent recording, a WAV whose
        header claims 4 Hz, and a row whose file is missing. Each has its own labelled
        specimen, so a build meets them rather than leaving them unlabelled.
    recordsets : int, default 3
        Recordsets (synthetic sound archives) the specimens are dealt to.
    stereo_fraction : float, default 0.25
        About this fraction of the recordings are written in stereo.
    duration : float, default 6.0
        Nominal seconds of a recording's call part; each one is 0.8 to 1.25 times it,
        and an intro or leading silence makes it longer.
    base_url : str, optional
        If given, ``accessuri`` is ``base_url + '/sounds/<uuid>.<ext>'``; otherwise the
        file's absolute path, as :func:`idigdask.synthetic.make_sheets` writes.
    n_jobs : int, optional
        Worker processes (default: the usable cores); sets of under 40 recordings are
        written in this process. The bytes are the same either way.

    Returns
    -------
    pathlib.Path
        The media parquet, ``<folder>/media.parquet``.

    Notes
    -----
    Writes ``sounds/<media uuid>.<ext>`` (``.wav``, ``.flac``, ``.ogg``, ``.mp3``);
    ``media.parquet``, one row per recording in recordset order with ``mediatype``
    ``sounds``, ``format`` from :data:`MIME_TYPES`, ``type`` ``sound``, the specimen
    uuid in ``records``, and the species of the call type in ``data``
    (``dwc:scientificName``, ``dwc:family``); ``labels.csv`` (``record_uuid``,
    ``catalogNumber``, ``call``), one row per specimen, for
    ``idigdask.attach_labels(catalog, labels, label="call")``; and
    ``recordings.csv``, the truth of every recording (``media_uuid``, ``record_uuid``,
    ``call``, ``format``, ``rate``, ``channels``, ``intro``, ``leading_silence``,
    ``snr_db``, ``duration``, ``fault``: empty, or which of :data:`FAULTS`).

    Read it with ``idigdask.read_catalog(path, media_type="sounds")``: by default a
    catalog keeps images only and marks these rows ``unsupported_media_type:sounds``.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> path = write_call_catalog(tempfile.mkdtemp(), n=4, duration=1.0, faults=True)
    >>> media = pd.read_parquet(path)
    >>> len(media), sorted(media["mediatype"].unique())
    (10, ['sounds'])
    >>> labels = pd.read_csv(path.parent / "labels.csv")
    >>> sorted(labels.columns)
    ['call', 'catalogNumber', 'record_uuid']
    """
    _check_catalog_args(n, seed, kinds, formats, rates, intro_fraction, recordsets,
                        stereo_fraction, duration)
    seed, n = int(seed), int(n)
    root = Path(folder).expanduser().resolve()
    sounds = root / "sounds"
    sounds.mkdir(parents=True, exist_ok=True)
    plan = _plan(n, seed, tuple(kinds), tuple(formats), tuple(rates), intro_fraction,
                 int(recordsets), stereo_fraction, duration)
    if faults:
        plan += _fault_rows(seed, n, tuple(kinds), max(p["specimen"] for p in plan) + 1,
                            int(recordsets))
    for item in plan:
        item["seed"] = seed
        item["media_uuid"] = _media_uuid(seed, item["index"])
        item["record_uuid"] = _record_uuid(seed, item["specimen"])
        item["path"] = str(sounds / f"{item['media_uuid']}.{item['format']}")
    digests = _run_jobs(plan, n_jobs or _default_jobs())
    rows = []
    for item, digest in zip(plan, digests):
        uri = item["path"] if base_url is None else \
            f"{base_url.rstrip('/')}/sounds/{item['media_uuid']}.{item['format']}"
        rows.append(_guoda_row(item, uri, digest, seed))
    order = sorted(range(len(rows)), key=lambda i: (plan[i]["recordset"], i))
    catalog = write_guoda(root / "media.parquet", [rows[i] for i in order])
    _write_tables(root, seed, plan)
    return catalog


def _guoda_row(item: dict[str, Any], uri: str, digest: tuple[str, str] | None,
               seed: int) -> dict[str, Any]:
    import datetime as dt

    mime = MIME_TYPES[item["format"]]
    number = _catalog_number(seed, item["specimen"])
    when = dt.datetime(2019, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=item["index"])
    name, family = item["species"]
    sha256, sha1 = digest or (None, None)
    return {
        "accessuri": uri,
        "data": {"ac:accessURI": uri, "ac:bestQualityAccessURI": uri,
                 "ac:hashFunction": None if sha256 is None else "SHA-256",
                 "ac:hashValue": sha256, "coreid": f"urn:catalog:SYNSND:{number}",
                 "dc:type": "Sound", "dcterms:format": mime, "dcterms:identifier": uri,
                 "dcterms:rights": _RIGHTS, "dwc:catalogNumber": number, "dwc:family": family,
                 "dwc:institutionCode": "SYNSND", "dwc:scientificName": name,
                 "xmpRights:WebStatement": _WEBSTATEMENT},
        "datemodified": when, "dqs": 0.5,
        "etag": sha1,
        "format": mime, "hasSpecimen": True, "licenselogourl": _LICENSE_LOGO,
        "mediatype": "sounds", "modified": when,
        "recordset": _recordset_uuid(seed, item["recordset"]),
        "records": [item["record_uuid"]], "rights": _RIGHTS, "tag": None, "type": "sound",
        "uuid": item["media_uuid"], "version": "1", "webstatement": _WEBSTATEMENT,
        "xpixels": None, "ypixels": None,
    }


def _write_tables(root: Path, seed: int, plan: list[dict[str, Any]]) -> None:
    """``labels.csv``, one row a specimen, and ``recordings.csv``, one row a recording."""
    specimens = sorted({(p["specimen"], p["record_uuid"], p["kind"]) for p in plan})
    with open(root / "labels.csv", "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["record_uuid", "catalogNumber", "call"])
        for number, record, kind in specimens:
            out.writerow([record, _catalog_number(seed, number), kind])
    fields = ["media_uuid", "record_uuid", "call", "format", "rate", "channels", "intro",
              "leading_silence", "snr_db", "duration", "fault"]
    with open(root / "recordings.csv", "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(fields)
        for p in plan:
            out.writerow([p["media_uuid"], p["record_uuid"], p["kind"], p["format"], p["rate"],
                          p["channels"], int(p["intro"]), p["leading_silence"], p["snr_db"],
                          p["duration"], p["fault"]])
