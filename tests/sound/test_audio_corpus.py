"""Sound files the project did not make, decoded by idigdask and by soundfile (libsndfile).

The corpus is test data that packages on PyPI ship in their source distributions:
``mutagen`` (the audio-metadata library) carries about a hundred small real-world files
in ``tests/data``, chosen for their odd metadata and damage: ID3v1 and ID3v2 tags, APEv2
and Lyrics3 tags, Xing, Info and VBRI headers (one of them wrong), MP3 frames cut by
the authors' trimming, FLAC files with an invalid STREAMINFO, an oversized metadata
header (``ooming-header.flac``), an application block, variable block sizes, silent AIFF
files of one to four channels, WAV files with ID3 chunks, Ogg Vorbis with multi-page
comments, Opus, Speex, Ogg FLAC and Theora, and formats libsndfile does not read at all
(MP4/M4A, AAC, AC-3, WMA, WavPack, Musepack, Monkey's Audio, TAK, TTA, OptimFROG, DSD,
MIDI) beside non-audio files (a JPEG, bare ID3 and APEv2 tags). ``audioread`` adds two
complete MP3s with JSON sidecars of their duration, channels and rate. The sdists are
fetched once with ``pip download`` (their sha256 pinned, so the corpus never changes under
the tests), kept in ``~/.cache/idigdask/corpus/audio`` (``$XDG_CACHE_HOME`` where set)
and read in memory; the tests skip only when the registry cannot be reached and nothing
is cached. ``IDIGDASK_AUDIO_CORPUS`` (folders, separated by ``os.pathsep``) adds every file
found in them.

Every file of the data folders goes through :func:`~idigdask.audio.process_sound_bytes`
with the default :class:`~idigdask.audio.SoundOptions`. It returns :class:`Clips` or
raises :class:`~idigdask.errors.MediaError` with a reason of ``SOUND_REASONS``; any other
exception fails, and so does a hang (the test's timeout). The oracle is soundfile, which
wraps the libsndfile idigdask decodes with:

* where soundfile cannot open the file, idigdask raises ``not_audio`` or ``corrupt``
  (``empty`` for no bytes);
* where ``soundfile.read`` reads it, the reason is what the header and the frames read
  give, checked in idigdask's order: ``bad_sample_rate``, ``bad_channels``, ``empty`` (no
  frame), ``too_long``, ``too_short`` (under ``min_duration``, from the frames or the
  header's count), ``silent`` (the mono mix, the mean of the channels, never reaches
  ``silence_dbfs``); a short or empty recording that the header shows cut (FLAC's
  STREAMINFO, an MP3's count of frames) is ``corrupt`` instead, and where libsndfile
  cannot see a cut (WAV, AIFF, Ogg: idigdask reads their containers itself) both are
  right. Otherwise idigdask returns Clips with soundfile's rate and channels, and a
  ``duration`` of exactly soundfile's frames over the rate (no tolerance: both read the
  same libsndfile decoder to its end, and its decoders give the same frames whatever
  the size of the blocks asked for); :func:`~idigdask.audio.decode_audio` gives
  soundfile's samples mixed to mono (within float32 rounding; in the first 20 ms of an
  Opus stream within 1e-3, as libsndfile's Opus decoder primes itself anew after
  soundfile's seek to the start), and the clips are the spectrograms of soundfile's
  samples made with idigdask's public steps (:func:`resample`, :func:`trim_start`,
  :func:`clip_starts`, :func:`log_mel`, :func:`quantize`): the same count, offsets and,
  within one level of ``uint8`` rounding, the same values;
* where soundfile opens the file but ``soundfile.read`` raises, the oracle is what
  soundfile reads in blocks of 1024 frames. Where those go to the end without an error
  (``soundfile.read`` cannot allocate a stream of unknown length), the rules above apply
  to them. Where a decoder error stops them part-way, idigdask may keep the frames
  before the error, and so decode what ``soundfile.read`` refuses: it returns Clips
  only if that prefix is long and loud enough, with a warning of the fault and within
  one of its own blocks (65536 frames) of the prefix, and otherwise raises ``corrupt``
  (or ``silent`` for a silent prefix). The printed table lists these files.

A second test holds the warnings to what is in the file: an MP3 without a Xing, Info or
VBRI header has no count of its frames, only libmpg123's estimate from its size and first
bitrate; when every MPEG frame of the file is whole (walked here header by header, up to
the end or the ID3v1 tag) and libsndfile decodes all of them, the file is complete and
idigdask may not call it ``truncated`` (nor refuse it as ``corrupt``). A third checks
audioread's two MP3s against their sidecars.

``pytest -s`` prints the table of files and outcomes and a tally.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from idigdask.audio import (SOUND_REASONS, Clips, SoundOptions, clip_starts, decode_audio, log_mel,
                            process_sound_bytes, quantize, resample, trim_start)
from idigdask.errors import MediaError
from idigdask.testing.registry import (RegistryUnreachable, corpus_cache, download_sdists,
                                       is_cached)

# ------------------------------------------------------------------ the corpus
#: sdist file -> (requirement, sha256 of PyPI's file, the folder of its data files).
CORPUS_SDISTS = {
    "mutagen-1.47.0.tar.gz": ("mutagen==1.47.0",
                              "719fadef0a978c31b4cf3c956261b3c58b6948b32023078a2117b1de09f0fc99",
                              "tests/data/"),
    "audioread-3.0.1.tar.gz": ("audioread==3.0.1",
                               "ac5460a5498c48bdf2e8e767402583a4dcd13f4414d286f42ce4379e8b35066d",
                               "test/data/"),
}
EXTRA_ENV = "IDIGDASK_AUDIO_CORPUS"
#: Names of files that are meant to hold audio (the others must be refused as well).
AUDIO_SUFFIXES = (".wav", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".flac", ".ogg", ".oga",
                  ".oggflac", ".oggtheora", ".opus", ".spx", ".mp3", ".mp2", ".m4a", ".m4b", ".mp4",
                  ".3g2", ".aac", ".ac3", ".eac3", ".wma", ".wv", ".mpc", ".ape", ".tak", ".tta",
                  ".ofr", ".ofs", ".dff", ".dsf", ".mid", ".w64", ".rf64")
MIN_AUDIO_MEMBERS = 40

def cache_dir() -> Path:
    """Where fetched corpora are kept between runs."""
    return corpus_cache("audio")


def _download_sdists(names: list[str], dest: Path) -> None:
    """The named sdists, fetched from the registry into ``dest`` (skip if unreachable)."""
    try:
        download_sdists([CORPUS_SDISTS[name][:2] for name in names], dest)
    except RegistryUnreachable as exc:
        pytest.skip(f"{exc}, and no corpus is cached in {cache_dir()}")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def sdists() -> dict[str, Path]:
    """sdist name -> local path: the registry corpus, fetched once and cached."""
    folder = cache_dir()
    missing = [name for name, (_, digest, _) in CORPUS_SDISTS.items()
               if not is_cached(folder / name, digest)]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder, prefix=".fetch-"))
        try:
            _download_sdists(missing, work)
            for name in missing:
                assert is_cached(work / name, CORPUS_SDISTS[name][1]), f"{name} is not the pinned one"
                os.replace(work / name, folder / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {name: folder / name for name in CORPUS_SDISTS}


def _extra_files() -> dict[str, Path]:
    """Files of the folders named in ``IDIGDASK_AUDIO_CORPUS``."""
    found = {}
    for root in filter(None, os.environ.get(EXTRA_ENV, "").split(os.pathsep)):
        for entry in sorted(Path(root).iterdir()):
            if entry.is_file():
                found[f"{Path(root).name}/{entry.name}"] = entry
    return found


@pytest.fixture(scope="session")
def corpus(sdists) -> dict[str, bytes]:
    """``package/file`` -> bytes of every file of the sdists' data folders, read in memory."""
    files = {}
    for name, path in sdists.items():
        package, folder = name.rsplit("-", 1)[0], CORPUS_SDISTS[name][2]
        with tarfile.open(path, "r:gz") as tar:
            for info in tar.getmembers():
                inner = info.name.split("/", 1)[-1]
                if info.isfile() and inner.startswith(folder):
                    with tar.extractfile(info) as member:
                        files[f"{package}/{inner[len(folder):]}"] = member.read()
    files.update({name: path.read_bytes() for name, path in _extra_files().items()})
    return files


def is_audio_name(name: str) -> bool:
    return name.lower().endswith(AUDIO_SUFFIXES)


# ------------------------------------------------------------------ the oracle
#: libsndfile's frame count of a stream whose length it does not know (SF_COUNT_MAX).
UNKNOWN_FRAMES = 1 << 62
#: Frames per read of the oracle's block-wise reading, and the most frames idigdask's own
#: blocks (65536 frames) may keep or lose beyond it around a decoder error.
ORACLE_BLOCK = 1024
DECODER_BLOCK = 1 << 16
#: Seconds at the start of an Opus stream that libsndfile decodes differently after a seek.
OPUS_PRIMING = 0.02
#: Formats whose cuts libsndfile hides and idigdask finds in the container itself.
HIDDEN_CUTS = ("WAV", "WAVEX", "AIFF", "OGG", "RF64", "W64")


@dataclasses.dataclass
class Oracle:
    """What soundfile made of a file."""

    opened: bool
    error: str | None = None  # soundfile's refusal to open, or soundfile.read's exception
    frames: np.ndarray | None = None  # (n, channels) float32: all, or those before the error
    rate: int = 0
    channels: int = 0
    header_frames: int = 0
    format: str = ""
    subtype: str = ""
    block_error: str | None = None  # libsndfile's error in the block-wise reading

    @property
    def whole(self) -> bool:
        """Read to its end without a decoder error (by soundfile.read, or else in blocks)."""
        return self.opened and self.block_error is None

    @property
    def n(self) -> int:
        return 0 if self.frames is None else len(self.frames)

    @property
    def known(self) -> int | None:
        return self.header_frames if 0 < self.header_frames < UNKNOWN_FRAMES else None

    def mono(self) -> np.ndarray:
        return self.frames.mean(axis=1, dtype=np.float64).astype(np.float32)

    def peak_dbfs(self) -> float:
        peak = float(np.max(np.abs(self.mono()))) if self.n else 0.0
        return 20 * math.log10(peak) if peak > 0 else -math.inf

    def describe(self) -> str:
        if not self.opened:
            return f"soundfile refuses: {self.error}"
        peak = f", peak {self.peak_dbfs():.1f} dBFS" if self.n else ""
        head = f"{self.format}/{self.rate}Hz/{self.channels}ch {self.n} frames ({self.n / self.rate:.3f} s{peak})"
        if self.error is None:
            return head
        if self.whole:
            return f"{head} in blocks; soundfile.read: {self.error}"
        return f"{head} in blocks before libsndfile's error ({self.block_error}); soundfile.read: {self.error}"


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120]


def oracle_read(data: bytes) -> Oracle:
    """soundfile's reading of ``data``; read in blocks where ``soundfile.read`` raises."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any refusal of the oracle counts as one
        return Oracle(opened=False, error=_message(exc))
    oracle = Oracle(opened=True, rate=int(info.samplerate), channels=int(info.channels),
                    header_frames=int(info.frames), format=str(info.format),
                    subtype=str(info.subtype))
    try:
        oracle.frames, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return oracle
    except Exception as exc:  # noqa: BLE001 - a decoder error, or soundfile's allocation
        oracle.error = f"{type(exc).__name__}: {_message(exc)}"
    blocks = []
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            while len(block := f.read(ORACLE_BLOCK, dtype="float32", always_2d=True)):
                blocks.append(block)
    except Exception as exc:  # noqa: BLE001 - where the decoder stops
        oracle.block_error = _message(exc)
    oracle.frames = (np.concatenate(blocks) if blocks
                     else np.zeros((0, max(1, oracle.channels)), np.float32))
    return oracle


@dataclasses.dataclass(frozen=True)
class Expected:
    """What idigdask may do with a file: refuse it with one of ``reasons``, or return Clips."""

    reasons: frozenset[str]
    clips: bool

    def __str__(self) -> str:
        return " or ".join([*(["Clips"] if self.clips else []), *sorted(self.reasons)])


def refuse(*reasons: str) -> Expected:
    return Expected(frozenset(reasons), False)


def expected(oracle: Oracle, data: bytes, options: SoundOptions) -> Expected:
    """The rules of the module docstring for one file."""
    if not oracle.opened:
        return refuse("empty") if not data else refuse("not_audio", "corrupt")
    if not options.min_rate <= oracle.rate <= options.max_rate:
        return refuse("bad_sample_rate")
    if not 1 <= oracle.channels <= options.max_channels:
        return refuse("bad_channels")
    n, rate, known = oracle.n, oracle.rate, oracle.known
    loud = n > 0 and oracle.peak_dbfs() >= options.silence_dbfs
    if not oracle.whole:
        # a decoder error part-way: the frames before it, if long and loud enough, else corrupt
        reasons = {"corrupt"} | ({"silent"} if n and not loud else set())
        return Expected(frozenset(reasons), loud and n / rate >= options.min_duration)
    # cut: fewer frames than the header counts; an MP3's count is only libmpg123's estimate
    # when the file's frames, walked one by one, are whole (see mpeg_whole_frames)
    estimate = oracle.format == "MP3" and mpeg_whole_frames(data) is not None
    cut = known is not None and known > n and not estimate
    hidden = oracle.format in HIDDEN_CUTS and not cut
    if n == 0 or oracle.header_frames == 0:
        return refuse("corrupt") if cut else refuse("empty", *(["corrupt"] if hidden else []))
    if (known or 0) / rate > options.max_duration or n / rate > options.max_duration:
        return refuse("too_long")
    if min(n, known or n) / rate < options.min_duration:
        return refuse("corrupt") if cut else refuse("too_short", *(["corrupt"] if hidden else []))
    if not loud:
        return refuse("silent")
    return Expected(frozenset(), True)


def oracle_clips(oracle: Oracle, options: SoundOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(spectrograms, offsets)`` of soundfile's samples through idigdask's public steps."""
    rate = options.sample_rate
    rest, trimmed = trim_start(resample(oracle.mono(), oracle.rate, rate), rate, options)
    starts = clip_starts(len(rest), rate, options)
    frames = options.clip_shape[1]
    # one STFT over the trimmed recording, zero-padded to the end of the last clip, with a
    # fixed reference; then each clip referenced as ``normalize`` says
    end = int(starts[-1]) + round(options.window * rate)
    padded = np.zeros(max(len(rest), end), np.float32)
    padded[:len(rest)] = rest
    first = starts // options.hop_length
    db = log_mel(padded, dataclasses.replace(options, normalize="none"))[:, :int(first[-1]) + frames]
    clips = np.stack([db[:, f:f + frames] for f in first])
    if options.normalize == "clip":
        ref = np.maximum(clips.max(axis=(1, 2)), db.max() - options.top_db)[:, None, None]
    elif options.normalize == "recording":
        ref = db.max()
    else:
        ref = 0.0
    return quantize(clips - ref, options.top_db), trimmed + starts / rate


# ------------------------------------------------------------------ MP3 frames
_MPEG_BITRATES = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
                  2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mpeg_whole_frames(data: bytes) -> int | None:
    """Samples of an MP3 whose Layer III frames are all whole, from the end of its ID3v2 tag
    to the end of the file or its ID3v1 tag, and whose first frame is no Xing, Info or VBRI
    header; None for anything else (a cut frame, bytes between frames, another layer, free
    bitrate, other trailing tags, a header that counts the frames)."""
    i = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        i = 10 + (data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]) + (10 if data[5] & 0x10 else 0)
    end = len(data) - (128 if data[-128:-125] == b"TAG" else 0)
    samples, per_frame = 0, None
    while i < end:
        head = data[i:i + 4]
        if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
            return None
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        index, rate_index = head[2] >> 4, (head[2] >> 2) & 3
        if version == 1 or layer != 1 or index in (0, 15) or rate_index == 3:
            return None
        bitrate = _MPEG_BITRATES[1 if version == 3 else 2][index] * 1000
        size = (144 if version == 3 else 72) * bitrate // _MPEG_RATES[version][rate_index] \
            + ((head[2] >> 1) & 1)
        this = 1152 if version == 3 else 576
        if i + size > end or per_frame not in (None, this):
            return None
        if per_frame is None and any(tag in data[i:i + size] for tag in (b"Xing", b"Info", b"VBRI")):
            return None
        per_frame, samples, i = this, samples + this, i + size
    return samples or None


# ------------------------------------------------------------------ idigdask's side
@dataclasses.dataclass
class Crash:
    """An exception other than MediaError out of process_sound_bytes."""

    error: BaseException
    traceback: str


Outcome = Clips | MediaError | Crash


def run_idigdask(data: bytes, options: SoundOptions) -> tuple[Outcome, float]:
    """idigdask's Clips, MediaError or other exception for a file, and the seconds it took."""
    start = time.perf_counter()
    try:
        result = process_sound_bytes(data, options)
    except MediaError as exc:
        result = exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
        result = Crash(exc, traceback.format_exc())
    return result, time.perf_counter() - start


def outcome_of(result: Outcome) -> str:
    if isinstance(result, Crash):
        return f"CRASH {type(result.error).__name__}"
    return "clips" if isinstance(result, Clips) else result.reason


def judge(name: str, data: bytes, oracle: Oracle, result: Outcome,
          options: SoundOptions) -> list[str]:
    """The disagreements of idigdask with the rules of the module docstring (empty: agreed)."""
    if isinstance(result, Crash):
        return [f"{name}: idigdask raised {type(result.error).__name__} instead of a "
                f"MediaError ({oracle.describe()}):\n{result.traceback}"]
    want = expected(oracle, data, options)
    if isinstance(result, MediaError):
        if result.reason not in SOUND_REASONS or not str(result).strip():
            return [f"{name}: a MediaError of reason {result.reason!r} is not one of "
                    f"SOUND_REASONS, or has no message: {result!r}"]
        if result.reason not in want.reasons:
            return [f"{name}: idigdask refused it ({result}) where soundfile's reading says "
                    f"{want}: {oracle.describe()}"]
        return []
    if not want.clips:
        return [f"{name}: idigdask returned {len(result.spectrograms)} clips of "
                f"{result.duration:.3f} s where soundfile's reading says {want}: "
                f"{oracle.describe()}"]
    problems = []
    if (result.source_rate, result.channels) != (oracle.rate, oracle.channels):
        problems.append(f"{name}: idigdask {result.source_rate} Hz, {result.channels} channels; "
                        f"soundfile {oracle.rate} Hz, {oracle.channels}")
    if result.spectrograms.ndim != 3 or result.spectrograms.shape[1:] != options.clip_shape \
            or result.spectrograms.dtype != np.uint8 or not len(result.spectrograms):
        problems.append(f"{name}: spectrograms {result.spectrograms.dtype} {result.spectrograms.shape}")
        return problems
    if not result.spectrograms.any():
        problems.append(f"{name}: every spectrogram is all zero")
    if not oracle.whole:
        # frames soundfile.read refuses: a prefix of the frames, with the fault in a warning
        got = round(result.duration * result.source_rate)
        if abs(got - oracle.n) > DECODER_BLOCK or not result.warnings:
            problems.append(f"{name}: idigdask decoded {got} frames with warnings "
                            f"{result.warnings}; soundfile reads {oracle.n} before its error")
        return problems
    if round(result.duration * oracle.rate) != oracle.n or \
            not math.isclose(result.duration, oracle.n / oracle.rate, rel_tol=1e-12):
        problems.append(f"{name}: duration {result.duration!r} s, soundfile {oracle.n} frames "
                        f"at {oracle.rate} Hz = {oracle.n / oracle.rate!r} s")
        return problems
    samples, rate, channels = decode_audio(data, options)
    want = oracle.mono()
    same = len(samples) == len(want)
    if same and oracle.subtype == "OPUS":
        # libsndfile's Opus decoder primes itself anew after soundfile.read's seek to the
        # start: its first samples differ slightly from those decoded straight after opening
        # (as idigdask and soundfile's own blocks read them)
        start = round(OPUS_PRIMING * rate)
        same = np.allclose(samples[:start], want[:start], rtol=0, atol=1e-3)
        samples, want = samples[start:], want[start:]
    if (rate, channels) != (oracle.rate, oracle.channels) or not same or \
            not np.allclose(samples, want, rtol=0, atol=1e-6):
        worst = float(np.max(np.abs(samples - want))) if len(samples) == len(want) else math.nan
        problems.append(f"{name}: decode_audio gives {len(samples)} samples at {rate} Hz of "
                        f"{channels} channels, soundfile's mono mix {len(want)} (largest "
                        f"difference {worst:.3g})")
        return problems
    spectrograms, offsets = oracle_clips(oracle, options)
    if spectrograms.shape != result.spectrograms.shape or \
            not np.allclose(result.offsets, offsets, rtol=0, atol=1e-9):
        problems.append(f"{name}: {len(result.spectrograms)} clips at {result.offsets.tolist()}; "
                        f"soundfile's samples give {len(spectrograms)} at {offsets.tolist()}")
        return problems
    diff = np.abs(result.spectrograms.astype(np.int16) - spectrograms.astype(np.int16))
    if diff.max() > 1 or np.count_nonzero(diff) > 0.01 * diff.size:
        problems.append(f"{name}: spectrograms differ from those of soundfile's samples: up to "
                        f"{int(diff.max())} levels, {np.count_nonzero(diff)} of {diff.size} bins")
    return problems


# ------------------------------------------------------------------ tests
_READINGS: dict[str, tuple[Oracle, Outcome, float]] = {}


def readings(corpus: dict[str, bytes]) -> dict[str, tuple[Oracle, Outcome, float]]:
    """file -> (soundfile's reading, idigdask's outcome, idigdask's seconds), done once
    (inside a test, so that its timeout covers the decoding)."""
    if set(_READINGS) != set(corpus):
        options = SoundOptions()
        _READINGS.clear()
        _READINGS.update({name: (oracle_read(data), *run_idigdask(data, options))
                          for name, data in sorted(corpus.items())})
    return _READINGS


def _detail(result: Outcome) -> str:
    if isinstance(result, Clips):
        return (f"{len(result.spectrograms)} clips, {result.duration:.3f} s, "
                f"{result.source_rate} Hz, {result.channels} ch"
                + (f", warnings {list(result.warnings)}" if result.warnings else ""))
    return " ".join(str(result.error if isinstance(result, Crash) else result).split())


def _print_table(corpus, table, disagreements: list[str], seconds: float) -> None:
    width = max(map(len, table))
    print(f"\n{'file':{width}}  {'idigdask':11} {'s':>5}  soundfile / idigdask")
    for name, (oracle, result, took) in table.items():
        print(f"{name:{width}}  {outcome_of(result):11} {took:5.2f}  {oracle.describe()}\n"
              f"{'':{width}}  {'':17}  -> {_detail(result)[:200]}")
    tally = collections.Counter(outcome_of(result) for _, result, _ in table.values())
    print(f"\n{len(corpus)} files ({sum(map(is_audio_name, corpus))} audio by name) in "
          f"{seconds:.1f} s: " + ", ".join(f"{k} {v}" for k, v in tally.most_common()))
    oracles = [oracle for oracle, _, _ in table.values()]
    print(f"soundfile.read reads {sum(o.opened and o.error is None for o in oracles)}, opens but "
          f"does not read {sum(o.opened and o.error is not None for o in oracles)}, refuses "
          f"{sum(not o.opened for o in oracles)}")
    for name, (oracle, result, _) in table.items():
        if oracle.opened and oracle.error is not None:
            print(f"soundfile.read refuses what idigdask judges by its frames: {name}: "
                  f"{oracle.describe()}; idigdask: {_detail(result)}")
    for line in disagreements:
        print("DISAGREEMENT", line)


@pytest.mark.timeout(120, method="thread", func_only=True)
def test_corpus_agrees_with_soundfile(corpus):
    """Every file: Clips or a MediaError of SOUND_REASONS, as soundfile's reading says."""
    options, start = SoundOptions(), time.perf_counter()
    table = readings(corpus)
    disagreements = [line for name, (oracle, result, _) in table.items()
                     for line in judge(name, corpus[name], oracle, result, options)]
    _print_table(corpus, table, disagreements, time.perf_counter() - start)
    assert sum(map(is_audio_name, corpus)) >= MIN_AUDIO_MEMBERS, sorted(corpus)
    outcomes = collections.Counter(outcome_of(result) for _, result, _ in table.values())
    assert outcomes["clips"] >= 5 and outcomes["silent"] >= 5 and outcomes["not_audio"] >= 10, outcomes
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.timeout(120, method="thread", func_only=True)
def test_a_whole_mp3_without_a_frame_count_is_not_truncated(corpus):
    """An MP3 of whole frames, all decoded, is no cut file whatever libmpg123 estimated."""
    checked, problems = [], []
    for name, (oracle, result, _) in readings(corpus).items():
        samples = mpeg_whole_frames(corpus[name]) if oracle.whole and oracle.format == "MP3" else None
        if samples is None or samples != oracle.n:
            continue  # not walked to its end, or libsndfile does not decode every frame
        checked.append(name)
        if isinstance(result, MediaError) and result.reason == "corrupt":
            problems.append(f"{name}: all {samples} samples of its whole frames decode, "
                            f"idigdask says {result}")
        elif isinstance(result, Clips) and any(w.startswith("truncated") for w in result.warnings):
            problems.append(f"{name}: all {samples} samples of its whole frames decode "
                            f"(libmpg123 estimated {oracle.header_frames}), idigdask warns "
                            f"{list(result.warnings)}")
    print(f"\nMP3s of whole frames without a frame count: {checked}")
    assert checked, "no MP3 of the corpus could be walked frame by frame"
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(120, method="thread", func_only=True)
def test_audioread_sidecars(corpus):
    """audioread's sidecars: its two MP3s' channels, rate and (whole seconds of) duration."""
    table = readings(corpus)
    sidecars = {name: json.loads(corpus[name]) for name in corpus
                if name.startswith("audioread/") and name.endswith(".json")}
    assert len(sidecars) >= 2
    for name, meta in sidecars.items():
        audio = name.rsplit("/", 1)[0] + "/" + meta["filename"]
        _, result, _ = table[audio]
        assert isinstance(result, Clips), f"{audio}: {result}"
        assert (result.channels, result.source_rate) == (meta["channels"], meta["samplerate"]), audio
        assert int(result.duration) == int(meta["duration"]), (audio, result.duration, meta)
