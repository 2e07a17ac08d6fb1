"""Bytes of a sound recording in, log-mel clips out: the per-recording core, as pure functions.

:func:`process_sound_bytes` turns the bytes of one recording (WAV, FLAC, OGG/Vorbis,
MP3, AIFF ... whatever libsndfile reads) into fixed-size ``uint8`` log-mel spectrograms
of overlapping clips, or raises :class:`~idigdask.errors.MediaError` with a ledger
``reason`` (:data:`SOUND_REASONS`):

``not_audio``
    Bytes libsndfile does not recognise (an HTML error page, a JPEG, random bytes); the
    message says what they look like.
``corrupt``
    A recognised container that does not decode: a broken header, or a file cut so
    early that no sample (or less than ``min_duration`` of them) decodes.
``empty``
    No bytes, or a recording of no frames.
``too_short``, ``too_long``
    Under ``min_duration`` or over ``max_duration`` seconds, judged from the header
    before decoding and again from the frames decoded.
``bad_sample_rate``, ``bad_channels``
    A header sample rate outside ``min_rate`` to ``max_rate``, or more channels than
    ``max_channels``.
``silent``
    The mono mix never reaches ``silence_dbfs``.
``out_of_memory``
    The decode or the transform ran out of memory; the record fails, the run goes on.

The steps, each a public function: :func:`decode_audio` (header checks, then a decode
in blocks to mono ``float32``, memory bounded by ``max_duration`` even if the header
lies), :func:`resample` (soxr, anti-aliased), :func:`trim_start` (leading silence and,
optionally, a spoken introduction), :func:`clip_starts` (the clip grid),
:func:`log_mel` (one STFT over the whole recording, mel filterbank, power in dB) and
:func:`quantize`.

How libsndfile 1.2 treats a file that is cut short, and what is done about it:

WAV, AIFF
    libsndfile silently shortens the recording to the frames present. The declared
    length is read from the container (the ``data`` chunk's size, the ``COMM`` chunk's
    frame count) and a shortfall becomes the warning ``"truncated: N of M frames"``.
FLAC
    The header (STREAMINFO) gives the full length; decoding stops with a libsndfile
    error (``flac decoder lost sync``) at the cut. The frames decoded before it are
    kept (blocks are read through libsndfile's C call so that the error does not
    discard them) with the same warning.
OGG/Vorbis
    libsndfile reports, and decodes, the frames up to the last complete page, with no
    error. A stream whose last page is cut or lacks the end-of-stream flag gets the
    warning ``"truncated: N frames, the Ogg stream stops before its last page"``.
MP3
    The Xing/Info header gives the full length (libsndfile never decodes past it);
    the decoder stops quietly at the cut, so the shortfall gives the warning above.
    An MP3 without that header has its length estimated by libmpg123; when decoding
    stops at the estimate with much of the file unread, a warning says so.

In every format a cut inside the header is ``corrupt`` (or ``not_audio`` when not even
the format's signature is left), and so is a cut that leaves less than ``min_duration``.
libmpg123 prints its complaints about a damaged MP3 on the process's stderr; they
cannot be silenced for one thread and change nothing.

Memory: the mono recording at the source rate (4 bytes a frame, allocated from the
header's count and never beyond ``max_duration``), its resampled copy and the padded
copy the STFT frames are views of; the spectrogram work arrays are a few MiB whatever
the length.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from .errors import MediaError, UserError
from .hashing import sha256_hex
from .options import check, coerce_fields, setting

__all__ = ["AMIN", "Clips", "NORMALIZE_MODES", "SOUND_REASONS", "SoundOptions", "TRIM_MODES",
           "clip_starts", "decode_audio", "dequantize", "log_mel", "mel_filterbank",
           "process_sound_bytes", "quantize", "resample", "trim_start"]

#: The ledger reasons of a recording that cannot be used.
SOUND_REASONS = ("not_audio", "corrupt", "empty", "too_short", "too_long", "bad_sample_rate",
                 "bad_channels", "silent", "out_of_memory")
#: Where 0 dB is: each clip's loudest bin, the recording's, or a fixed full scale.
NORMALIZE_MODES = ("clip", "recording", "none")
#: What is cut from the start of a recording.
TRIM_MODES = ("silence", "intro", "none")
#: Floor of the mel power before the logarithm (librosa's ``amin``): zero padding and
#: digital silence read -100 dB instead of -inf.
AMIN = 1e-10

#: Frames decoded at a time: 4 MiB of float32 for 16 channels.
_BLOCK_FRAMES = 1 << 16
#: STFT frames transformed at a time: the work arrays stay at a few MiB (and in cache).
_FFT_CHUNK = 512
#: Length of the frames whose energy :func:`trim_start` measures, seconds.
_TRIM_FRAME = 0.02
#: dB above the noise floor under which a frame of a noisy recording is silence, the
#: loudest such a level may be, and the frames (of _TRIM_FRAME) a pause is smoothed over.
_FLOOR_MARGIN_DB = 8.0
_SILENCE_CEILING_DB = -10.0
_PAUSE_FRAMES = 5
#: The band of a speaking voice (Hz), and the share of the energy an announcement has in it.
_VOICE_BAND = (80.0, 1000.0)
_VOICE_SHARE = 0.5
#: libsndfile's frame count of a stream whose length it does not know (SF_COUNT_MAX).
_UNKNOWN_FRAMES = 1 << 62
#: A float sample beyond this is garbage, not a loud sound; it is clamped so that the
#: float32 power spectrum cannot overflow.
_MAX_AMPLITUDE = 1e6
#: Bytes an MP3 may leave unread after the frames its header counts: libmpg123 reads to
#: the end of a whole file, so more than a trailing tag left over means more audio.
_MP3_SLACK = 2048
#: Subtypes libsndfile reads exactly as int16.
_SHORT_SUBTYPES = ("PCM_16", "PCM_S8", "PCM_U8")
#: WAV format tags whose frames are ``data`` size / block align (PCM, float, A-law,
#: mu-law, extensible).
_WAV_LINEAR = (1, 3, 6, 7, 0xFFFE)


# --------------------------------------------------------------------------- options


@dataclass
class SoundOptions:
    """How a recording is decoded, trimmed, cut into clips and turned into log-mel arrays.

    Every default is the dask config's ``idigdask.sound.<field>`` (``idigdask.yaml``;
    ``DASK_IDIGDASK__SOUND__SAMPLE_RATE=22050``), see :mod:`idigdask.options`.

    Parameters
    ----------
    sample_rate : int
        Hz the recording is resampled to (1000 to 384000).
    window : float
        Seconds of one clip; at least ``n_fft`` samples.
    hop : float
        Seconds between the starts of consecutive clips (overlap: ``window - hop``); each
        clip starts on the STFT frame nearest to its place on that grid (within half a
        ``hop_length``), so that clips are slices of one STFT; ``offset`` is that start.
    n_mels : int
        Mel bands of a spectrogram.
    n_fft : int
        Samples of an STFT frame (Hann window).
    hop_length : int
        Samples between STFT frames.
    fmin, fmax : float, float or None
        The band of interest, Hz; ``fmax`` None is ``sample_rate / 2``.
    top_db : float
        Dynamic range kept below 0 dB, and quantized into the 256 levels of ``uint8``.
    normalize : {"clip", "recording", "none"}
        Where 0 dB is: each clip's loudest bin (but never lower than ``top_db`` under
        the recording's loudest, so that a clip of digital silence or padding stays
        dark), the recording's loudest bin, or a fixed full scale: a full-scale sine in
        the band most sensitive to one (any band below 1 kHz), so that clips keep their
        absolute loudness.
    trim : {"silence", "intro", "none"}
        Cut leading silence; also a spoken introduction (see :func:`trim_start`); or
        nothing.
    trim_db : float
        dB (negative) below the recording's loudest 20 ms frame that counts as silence.
    intro_gap : float
        Seconds of silence that end an introduction.
    intro_max : float
        An introduction ends within this many seconds of the first sound.
    max_duration, min_duration : float
        Longer (``too_long``, judged from the header before decoding) or shorter
        (``too_short``) recordings are refused, seconds.
    max_channels : int
        Recordings with more channels are refused (``bad_channels``).
    min_rate, max_rate : int
        Source sample rates accepted, Hz (``bad_sample_rate`` outside).
    silence_dbfs : float
        A recording whose peak is below this, dB of full scale, is ``silent``.

    Examples
    --------
    >>> options = SoundOptions(sample_rate=22050, hop=0.5, hop_length=245)
    >>> options.sample_rate, options.fmax, options.clip_shape
    (22050, None, (64, 181))
    >>> SoundOptions(sample_rate=22050).clip_shape    # clips start on the nearest frame
    (64, 276)
    >>> SoundOptions(hop=0.005)
    Traceback (most recent call last):
    ...
    idigdask.options.OptionError: hop: 0.005 is out of range: at least hop_length / sample_rate (0.01 s)
    """

    sample_rate: int = setting("sound.sample-rate")
    window: float = setting("sound.window")
    hop: float = setting("sound.hop")
    n_mels: int = setting("sound.n-mels")
    n_fft: int = setting("sound.n-fft")
    hop_length: int = setting("sound.hop-length")
    fmin: float = setting("sound.fmin")
    fmax: float | None = setting("sound.fmax")
    top_db: float = setting("sound.top-db")
    normalize: str = setting("sound.normalize")
    trim: str = setting("sound.trim")
    trim_db: float = setting("sound.trim-db")
    intro_gap: float = setting("sound.intro-gap")
    intro_max: float = setting("sound.intro-max")
    max_duration: float = setting("sound.max-duration")
    min_duration: float = setting("sound.min-duration")
    max_channels: int = setting("sound.max-channels")
    min_rate: int = setting("sound.min-rate")
    max_rate: int = setting("sound.max-rate")
    silence_dbfs: float = setting("sound.silence-dbfs")

    def __post_init__(self) -> None:
        coerce_fields(self)
        rate = self.sample_rate
        check(self, {"sample_rate": (lambda v: 1000 <= v <= 384000, "1000 to 384000 Hz")})
        check(self, {
            "n_fft": (lambda v: 16 <= v <= 65536, "16 to 65536 samples"),
            "hop_length": (lambda v: 1 <= v <= self.n_fft, "1 to n_fft samples"),
            "window": (lambda v: math.isfinite(v) and round(v * rate) >= self.n_fft,
                       f"at least n_fft samples ({self.n_fft / rate:g} s)"),
            "hop": (lambda v: math.isfinite(v) and v * rate >= self.hop_length,
                    f"at least hop_length / sample_rate ({self.hop_length / rate:g} s)"),
            "n_mels": (lambda v: 1 <= v <= 1 + self.n_fft // 2, "1 to 1 + n_fft / 2"),
            "fmax": (lambda v: v is None or 0 < v <= rate / 2,
                     f"above 0, at most sample_rate / 2 ({rate / 2:g} Hz)"),
            "fmin": (lambda v: 0 <= v < (self.fmax or rate / 2), "0 or more, below fmax"),
            "top_db": (lambda v: 0 < v < math.inf, "above 0 dB"),
            "normalize": (lambda v: v in NORMALIZE_MODES, f"one of {', '.join(NORMALIZE_MODES)}"),
            "trim": (lambda v: v in TRIM_MODES, f"one of {', '.join(TRIM_MODES)}"),
            "trim_db": (lambda v: -math.inf < v < 0, "below 0 dB"),
            "intro_gap": (lambda v: 0 < v < math.inf, "above 0 s"),
            "intro_max": (lambda v: 0 < v < math.inf, "above 0 s"),
            "max_duration": (lambda v: 0 < v < math.inf, "above 0 s"),
            "min_duration": (lambda v: 0 <= v <= self.max_duration, "0 to max_duration s"),
            "max_channels": (lambda v: v >= 1, "at least 1"),
            "min_rate": (lambda v: v >= 1, "at least 1 Hz"),
            "max_rate": (lambda v: v >= self.min_rate, "at least min_rate"),
            "silence_dbfs": (lambda v: -math.inf < v < 0, "below 0 dBFS"),
        })

    @property
    def clip_shape(self) -> tuple[int, int]:
        """``(n_mels, frames)`` of one clip's spectrogram, frames ``1 + window samples // hop_length``.

        Examples
        --------
        >>> SoundOptions().clip_shape
        (64, 201)
        """
        return self.n_mels, 1 + round(self.window * self.sample_rate) // self.hop_length


def _band(options: SoundOptions) -> tuple[float, float]:
    return float(options.fmin), float(options.fmax if options.fmax is not None else options.sample_rate / 2)


# --------------------------------------------------------------------------- results


@dataclass
class Clips:
    """One recording made ready for the store: its clips' log-mel spectrograms.

    Attributes
    ----------
    spectrograms : numpy.ndarray
        ``(k, n_mels, frames)`` uint8, quantized log-mel power (see :func:`quantize`);
        ``(n_mels, frames)`` is :attr:`SoundOptions.clip_shape`.
    offsets : numpy.ndarray
        ``(k,)`` float64: where each clip starts, in seconds of the source recording
        (the trimmed start included).
    sha256 : str
        Hex SHA-256 of the file's bytes.
    duration : float
        Seconds of the source, as decoded.
    source_rate : int
        The source's sample rate, Hz.
    channels : int
        The source's channels (mixed to mono).
    trimmed : float
        Seconds cut from the start (:func:`trim_start`).
    warnings : tuple of str
        Faults that were mended (``"truncated: 1200 of 44100 frames"``,
        ``"replaced 3 non-finite samples with 0"``); resampling and mixing to mono are
        not faults. Empty for a clean file.

    Examples
    --------
    >>> clips = Clips(np.zeros((2, 64, 201), np.uint8), np.array([0.0, 1.0]), "0" * 64,
    ...               3.0, 44100, 2, 0.0, ())
    >>> clips.spectrograms.shape, clips.offsets.tolist(), clips.warnings
    ((2, 64, 201), [0.0, 1.0], ())
    """

    spectrograms: np.ndarray
    offsets: np.ndarray
    sha256: str
    duration: float
    source_rate: int
    channels: int
    trimmed: float
    warnings: tuple[str, ...] = ()


class _Decoded(NamedTuple):
    samples: np.ndarray  # mono float32 at the source rate
    rate: int
    channels: int
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- sniffing


def _sniff(data: bytes) -> tuple[str | None, str]:
    """``(audio container or None, what the bytes look like)`` from their first bytes."""
    head = data[:64]
    if head[:4] in (b"RIFF", b"RIFX") and (len(head) < 12 or head[8:12] == b"WAVE"):
        return "WAV", "a WAV file"
    if head[:4] in (b"RF64", b"BW64"):
        return "WAV", "an RF64 WAV file"
    if head[:4] == b"FORM" and (len(head) < 12 or head[8:12] in (b"AIFF", b"AIFC")):
        return "AIFF", "an AIFF file"
    if head[:4] == b"fLaC":
        return "FLAC", "a FLAC file"
    if head[:4] == b"OggS":
        return "OGG", "an Ogg file"
    if head[:3] == b"ID3" or _mpeg_sync(head):
        return "MP3", "an MPEG audio file"
    if head[:4] in (b".snd", b"caff"):
        return "AU" if head[:4] == b".snd" else "CAF", "an AU or CAF file"
    return None, _looks_like(data)


def _mpeg_sync(head: bytes) -> bool:
    """Whether ``head`` opens with a plausible MPEG audio frame header (layer I, II or III)."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    return version != 1 and layer != 0 and head[2] >> 4 != 0xF and (head[2] >> 2) & 3 != 3


#: MPEG audio bitrates (kbit/s) by bitrate index, of MPEG-1 and of MPEG-2/2.5 Layer III,
#: and sample rates by version (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and rate index.
_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_uncounted_whole(data: bytes) -> bool:
    """Whether an MP3 carries no frame count and all its Layer III frames are whole.

    Such a file's length, as libsndfile reports it, is libmpg123's guess from the file
    size and the first frame's bitrate (wrong for a variable bitrate); since every frame
    is whole, nothing was cut. Walked from the end of an ID3v2 tag to the end of the
    file or of its ID3v1 tag; anything else between frames makes it False.
    """
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # an ID3v2 tag: a synchsafe size
        at = 10 + (data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]) \
            + (10 if data[5] & 0x10 else 0)
    end = len(data) - (128 if data[-128:-125] == b"TAG" else 0)
    first = True
    while at < end:
        head = data[at:at + 4]
        if len(head) < 4 or not _mpeg_sync(head):
            return False
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        kbps, rate = head[2] >> 4, (head[2] >> 2) & 3
        if layer != 1 or kbps == 0:  # not Layer III, or free bitrate
            return False
        size = (144 if version == 3 else 72) * _MP3_KBPS[1 if version == 3 else 2][kbps] \
            * 1000 // _MP3_RATES[version][rate] + ((head[2] >> 1) & 1)
        if at + size > end:
            return False
        if first and any(tag in data[at:at + size] for tag in (b"Xing", b"Info", b"VBRI")):
            return False  # a header that counts the frames: the count is known
        first, at = False, at + size
    return not first


_SIGNATURES = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"),
               (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
               (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"\x1f\x8b", "gzip data"))


def _looks_like(data: bytes) -> str:
    """What bytes that libsndfile does not read look like, for the message."""
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            return what
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:8] == b"ftyp":
        return "an MP4/M4A container (AAC, ALAC), which libsndfile does not read"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "an AAC (ADTS) stream, which libsndfile does not read"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<"):
        return "an HTML page" if b"<html" in text or b"<!doctype html" in text or b"<body" in text \
            else "an XML or HTML document"
    if text.startswith((b"{", b"[")):
        return "JSON text"
    sample = data[:1024]
    if sample and sum(32 <= c < 127 or c in (9, 10, 13) for c in sample) > 0.95 * len(sample):
        return "text"
    return "unrecognised binary data"


# --------------------------------------------------------------------------- containers


def _declared_frames(data: bytes, container: str | None) -> int | None:
    """Frames a WAV or AIFF container says it holds, None when it does not say."""
    try:
        if container == "WAV" and data[:4] == b"RIFF":
            return _wav_frames(data)
        if container == "AIFF":
            return _aiff_frames(data)
    except (IndexError, ValueError):  # a header cut inside a chunk: nothing declared
        pass
    return None


def _wav_frames(data: bytes) -> int | None:
    i, tag, align = 12, None, 0
    while i + 8 <= len(data):
        kind, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if kind == b"fmt " and i + 22 <= len(data):
            tag = int.from_bytes(data[i + 8:i + 10], "little")
            align = int.from_bytes(data[i + 20:i + 22], "little")
        elif kind == b"data":
            if size == 0xFFFFFFFF or tag not in _WAV_LINEAR or align < 1:
                return None  # streamed (size unknown), or a compressed codec
            return size // align
        i += 8 + size + (size & 1)
    return None


def _aiff_frames(data: bytes) -> int | None:
    i = 12
    while i + 8 <= len(data):
        kind, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "big")
        if kind == b"COMM" and i + 14 <= len(data):
            return int.from_bytes(data[i + 10:i + 14], "big")
        i += 8 + size + (size & 1)
    return None


def _ogg_complete(data: bytes) -> bool:
    """Whether the last Ogg page is whole and closes its stream (the end-of-stream flag)."""
    i = data.rfind(b"OggS", max(0, len(data) - (1 << 17)))
    if i < 0 or i + 27 > len(data):
        return False
    body = i + 27 + data[i + 26]
    if body > len(data) or body + sum(data[i + 27:body]) > len(data):
        return False
    return bool(data[i + 5] & 0x04)


class _Source(io.BytesIO):
    """The bytes as libsndfile's virtual file; a seek before the start fails quietly.

    libsndfile probes some cut headers (AIFF) with a negative seek; BytesIO raises,
    and soundfile prints that from its callback instead of passing it on.
    """

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return super().seek(offset, whence)
        except (ValueError, OverflowError):
            return self.tell()


def _libsndfile() -> Any:
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - an install without the sound extra
        raise UserError("sounds need the soundfile package (libsndfile): pip install soundfile soxr") from exc
    return soundfile


def _block_reader(sound_file: Any,
                  channels: int) -> tuple[Callable[[], tuple[np.ndarray, str | None]], float]:
    """``(read, scale)``: ``read()`` gives the next ``(frames, channels)`` block and
    libsndfile's error (None), ``scale`` takes the block's values to full scale 1.0.

    libsndfile's C read is called directly: soundfile raises on an error and drops the
    frames of that call (a FLAC cut mid-stream would lose its last good block), and
    seeks after every read, which fails on a FLAC of unknown length. 8- and 16-bit PCM
    are read as int16, an order of magnitude faster than libsndfile's float conversion,
    and scaled by ``2 ** -15`` exactly as libsndfile would.
    """
    sf = _libsndfile()
    lib, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    handle = getattr(sound_file, "_file", None)
    if lib is None or ffi is None or handle is None:  # pragma: no cover - other soundfile builds
        buf = np.empty((_BLOCK_FRAMES, channels), np.float32)

        def read_public() -> tuple[np.ndarray, str | None]:
            try:
                return buf[:sound_file.buffer_read_into(buf, "float32")], None
            except RuntimeError as exc:
                return buf[:0], _error_text(exc)

        return read_public, 1.0
    short = str(sound_file.subtype) in _SHORT_SUBTYPES
    buf = np.empty((_BLOCK_FRAMES, channels), np.int16 if short else np.float32)
    pointer = ffi.cast("short *" if short else "float *", buf.ctypes.data)
    c_read = lib.sf_readf_short if short else lib.sf_readf_float

    def read() -> tuple[np.ndarray, str | None]:
        n = c_read(handle, pointer, _BLOCK_FRAMES)
        error = None
        if lib.sf_error(handle):
            error = _error_text(ffi.string(lib.sf_strerror(handle)).decode("utf-8", "replace"))
        return buf[:max(0, n)], error

    return read, (2.0 ** -15 if short else 1.0)


def _error_text(exc: BaseException | str) -> str:
    """libsndfile's message without its ``Error :`` prefix and final full stop."""
    text = str(exc if isinstance(exc, str) else getattr(exc, "error_string", None) or exc).strip()
    if text.lower().startswith("error :"):
        text = text[7:].strip()
    return text.rstrip(".")


# --------------------------------------------------------------------------- decode


def decode_audio(data: bytes, options: SoundOptions) -> tuple[np.ndarray, int, int]:
    """Decode a recording to mono ``float32`` at its own sample rate.

    The header is read first, and the recording refused from it alone for its sample
    rate, channels, emptiness or duration; then it is decoded in blocks of 65536
    frames, each mixed to mono (the mean of the channels) as it comes, and the decode
    stops (``too_long``) once ``max_duration`` is passed, so memory stays bounded even
    when a header lies about the length.

    Parameters
    ----------
    data : bytes
        The whole file.
    options : SoundOptions
        Its limits: ``min_rate``, ``max_rate``, ``max_channels``, ``min_duration``,
        ``max_duration``.

    Returns
    -------
    samples : numpy.ndarray
        ``(n,)`` float32, full scale 1.0; NaN and infinite samples are 0.
    rate : int
        The source's sample rate, Hz.
    channels : int
        The source's channels.

    Raises
    ------
    MediaError
        With reason ``not_audio``, ``corrupt``, ``empty``, ``too_short``, ``too_long``,
        ``bad_sample_rate``, ``bad_channels`` or ``out_of_memory`` (see the module
        notes). What was mended (a truncation) is in ``warnings`` of :class:`Clips` of
        :func:`process_sound_bytes`.

    Examples
    --------
    >>> import io, soundfile
    >>> stereo = np.zeros((22050, 2), np.float32); stereo[:, 0] = 0.5
    >>> buf = io.BytesIO(); soundfile.write(buf, stereo, 22050, format="FLAC")
    >>> samples, rate, channels = decode_audio(buf.getvalue(), SoundOptions())
    >>> samples.shape, samples.dtype, rate, channels, float(samples.max())
    ((22050,), dtype('float32'), 22050, 2, 0.25)
    """
    decoded = _guarded(_decode, bytes(data), options)
    return decoded.samples, decoded.rate, decoded.channels


def _guarded(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function``; an exhausted memory is a MediaError, not the run's end."""
    try:
        return function(*args)
    except MediaError:
        raise
    except MemoryError as exc:  # the arrays of this record are freed on return
        raise MediaError("out_of_memory", f"{type(exc).__name__}: {exc}") from None


def _decode(data: bytes, options: SoundOptions) -> _Decoded:
    if not data:
        raise MediaError("empty", "the file has no bytes")
    sf = _libsndfile()
    container, looks = _sniff(data)
    source = _Source(data)
    try:
        sound_file = sf.SoundFile(source)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's refusals, whatever their type
        if container is None:
            raise MediaError("not_audio", f"libsndfile does not recognise these {len(data)} bytes: "
                             f"they look like {looks}") from None
        message = _error_text(exc)
        if container == "MP3" and "does not exist" in message:  # libsndfile's words for "no MPEG frame"
            message = "no complete MPEG audio frame"
        raise MediaError("corrupt", f"{looks} that libsndfile cannot open: {message}") from None
    with sound_file:
        rate, channels, frames = int(sound_file.samplerate), int(sound_file.channels), int(sound_file.frames)
        kind = str(sound_file.format)
        declared = _declared_frames(data, container)
        _check_header(data, container, declared, rate, channels, frames, options)
        samples, error = _read_mono(sound_file, channels, rate, options)
    known = frames if 0 < frames < _UNKNOWN_FRAMES else None
    if container == "MP3" and known and len(samples) < known and _mp3_uncounted_whole(data):
        # an MP3 without a frame count: its length is libmpg123's guess, and every
        # frame is whole, so fewer frames than the guess is no cut
        known = None
    expected = max(declared or 0, known or 0) or None
    return _Decoded(*_checked_samples(samples, rate, channels, kind, expected, error, data, source, options))


def _check_header(data: bytes, container: str | None, declared: int | None, rate: int, channels: int,
                  frames: int, options: SoundOptions) -> None:
    """Refuse from the header alone: rate, channels, no frames, too long or too short."""
    if not options.min_rate <= rate <= options.max_rate:
        raise MediaError("bad_sample_rate", f"the header says {rate} Hz; accepted: "
                         f"{options.min_rate} to {options.max_rate} Hz")
    if not 1 <= channels <= options.max_channels:
        raise MediaError("bad_channels", f"the header says {channels} channels; accepted: "
                         f"1 to {options.max_channels}")
    cut = (declared is not None and declared > frames) or (container == "OGG" and not _ogg_complete(data))
    if frames == 0:
        if cut:
            raise MediaError("corrupt", "truncated: no frame is left"
                             + (f" of the {declared} declared" if declared else ""))
        raise MediaError("empty", "the recording has no frames")
    if frames >= _UNKNOWN_FRAMES:
        return  # a stream of unknown length: the decode's own cap applies
    if frames / rate > options.max_duration:
        raise MediaError("too_long", f"{frames / rate:.1f} s is over the limit of {options.max_duration:g} s")
    if frames / rate < options.min_duration:
        if cut:
            raise MediaError("corrupt", f"truncated: {frames} of {declared or '?'} frames, "
                             f"{frames / rate:.3f} s, under the {options.min_duration:g} s minimum")
        raise MediaError("too_short", f"{frames / rate:.3f} s is under the minimum of "
                         f"{options.min_duration:g} s")


def _read_mono(sound_file: Any, channels: int, rate: int,
               options: SoundOptions) -> tuple[np.ndarray, str | None]:
    """Decode block by block into one mono float32 array; stop once past ``max_duration``."""
    cap = math.floor(options.max_duration * rate) + 1
    frames = int(sound_file.frames)
    out = np.empty(min(frames if 0 < frames < _UNKNOWN_FRAMES else _BLOCK_FRAMES, cap), np.float32)
    (read, scale), total, error = _block_reader(sound_file, channels), 0, None
    mix = np.full(channels, scale / channels, np.float32)  # a matrix product: np.mean over 2 is slow
    while True:
        block, error = read()
        n = len(block)
        if n:
            if total + n > len(out):  # the header said fewer frames: grow, up to the cap
                grown = np.empty(min(max(2 * len(out), total + n), cap + _BLOCK_FRAMES), np.float32)
                grown[:total] = out[:total]
                out = grown
            target = out[total:total + n]
            if channels == 1:
                np.multiply(block[:, 0], np.float32(scale), out=target)
            else:
                with np.errstate(invalid="ignore"):  # NaN in a float file: replaced below
                    np.matmul(block, mix, out=target)
            total += n
            if total > cap:
                raise MediaError("too_long", f"more than {options.max_duration:g} s decode, "
                                 "beyond what the header says")
        if error or n == 0:
            break
    return out[:total], error


def _checked_samples(samples: np.ndarray, rate: int, channels: int, kind: str, expected: int | None,
                     error: str | None, data: bytes, source: io.BytesIO,
                     options: SoundOptions) -> tuple[np.ndarray, int, int, tuple[str, ...]]:
    """Judge the decoded frames: truncation, duration, non-finite and absurd samples."""
    n, warnings = len(samples), []
    note = f" ({error})" if error else ""
    if expected is not None and n < expected:
        cut = f"truncated: {n} of {expected} frames{note}"
    elif kind == "OGG" and not _ogg_complete(data):
        cut = f"truncated: {n} frames, the Ogg stream stops before its last page{note}"
    elif error:
        cut = f"decoding stopped after {n} frames: {error}"
    else:
        cut = None
    if n == 0:
        if cut:
            raise MediaError("corrupt", f"no frame decodes; {cut}")
        raise MediaError("empty", "the recording has no frames")
    if n / rate < options.min_duration:
        if cut:
            raise MediaError("corrupt", f"{cut}: {n / rate:.3f} s, under the "
                             f"{options.min_duration:g} s minimum")
        raise MediaError("too_short", f"{n / rate:.3f} s is under the minimum of {options.min_duration:g} s")
    if cut:
        warnings.append(cut)
    unread = len(data) - source.tell()
    if kind == "MP3" and expected == n and unread > _MP3_SLACK:
        warnings.append(f"decoding stopped at the {n} frames the header counts with {unread} of "
                        f"{len(data)} bytes unread: the recording may be longer")
    if not math.isfinite(float(samples.max()) + float(samples.min())):  # NaN and inf propagate
        finite = np.isfinite(samples)
        bad = int(finite.size - np.count_nonzero(finite))
        samples[~finite] = 0.0
        warnings.append(f"replaced {bad} non-finite samples with 0")
    if _peak(samples) > _MAX_AMPLITUDE:
        wild = int(np.count_nonzero((samples > _MAX_AMPLITUDE) | (samples < -_MAX_AMPLITUDE)))
        np.clip(samples, -_MAX_AMPLITUDE, _MAX_AMPLITUDE, out=samples)
        warnings.append(f"clamped {wild} samples beyond {_MAX_AMPLITUDE:g} times full scale")
    return samples, rate, channels, tuple(warnings)


def _peak(samples: np.ndarray) -> float:
    """The largest magnitude, without an ``abs`` copy of the recording."""
    return max(float(samples.max()), -float(samples.min())) if samples.size else 0.0


# --------------------------------------------------------------------------- resample, trim, clips


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono samples with soxr's high-quality, anti-aliased filter.

    Parameters
    ----------
    samples : numpy.ndarray
        ``(n,)`` float samples.
    rate_in, rate_out : int
        Sample rates, Hz; equal rates return the samples (as float32) untouched.

    Returns
    -------
    numpy.ndarray
        ``(round(n * rate_out / rate_in),)`` float32. Content above ``rate_out / 2``
        is filtered out (more than 100 dB down), not folded back.

    Examples
    --------
    >>> resample(np.zeros(44100, np.float32), 44100, 16000).shape
    (16000,)
    """
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if int(rate_in) == int(rate_out) or samples.size == 0:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, int(rate_in), int(rate_out), quality="HQ"), dtype=np.float32)


def _frame_db(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS of consecutive ``frame``-sample frames in dB relative to the loudest (-inf: digital zero)."""
    n = len(samples)
    full = n // frame
    energy = np.empty(full + (n % frame > 0), np.float64)
    body = samples[:full * frame].reshape(full, frame)
    energy[:full] = np.einsum("ij,ij->i", body, body)  # no squared copy of the recording
    energy[:full] /= frame
    if n % frame:  # the last frame is short
        tail = samples[full * frame:].astype(np.float64)
        energy[-1] = tail @ tail / len(tail)
    loudest = energy.max()
    with np.errstate(divide="ignore"):
        return 10 * np.log10(energy / loudest) if loudest > 0 else np.full(len(energy), -np.inf)


def trim_start(samples: np.ndarray, rate: int, options: SoundOptions) -> tuple[np.ndarray, float]:
    """Cut the start of a recording as ``options.trim`` says.

    The energy of 20 ms frames is measured in dB below the recording's loudest frame;
    a frame quieter than ``trim_db`` is silence, and so, in a field recording whose
    background noise never falls that low, is a frame within 8 dB of the noise floor
    (the 10th percentile of the frames; never less than 10 dB under the loudest).
    Pauses are found in the energy smoothed over 100 ms.

    ``"silence"``
        Cut the leading silent frames.
    ``"intro"``
        Cut them, then look for a spoken introduction: when a silent stretch of at
        least ``intro_gap`` seconds ends within ``intro_max`` seconds of the first
        sound, sound follows it, and what precedes it sounds like a voice (at least
        half its energy in 80-1000 Hz), everything up to the end of that stretch is
        cut (archive recordings often open with an announcement, a pause, then the
        animal).
    ``"none"``
        Cut nothing.

    The heuristic is energy and band only, not speech recognition: a low call (many
    frogs, under 1 kHz) that pauses for ``intro_gap`` early on loses its first phrase,
    an announcement without such a pause (or with noise through the pause as loud as
    the voice) is kept, and an announcement with a long pause inside it is cut there,
    keeping its end.

    Parameters
    ----------
    samples : numpy.ndarray
        ``(n,)`` mono samples.
    rate : int
        Their sample rate, Hz.
    options : SoundOptions
        ``trim``, ``trim_db``, ``intro_gap`` and ``intro_max``.

    Returns
    -------
    rest : numpy.ndarray
        The samples after the cut (a view).
    seconds : float
        Seconds cut.

    Examples
    --------
    >>> tone = np.sin(np.arange(16000, dtype=np.float32))
    >>> rest, cut = trim_start(np.concatenate([np.zeros(8000, np.float32), tone]), 16000,
    ...                        SoundOptions())
    >>> len(rest), cut
    (16000, 0.5)
    """
    if options.trim == "none" or len(samples) == 0:
        return samples, 0.0
    frame = max(1, round(_TRIM_FRAME * rate))
    db = _frame_db(samples, frame)
    threshold = _silence_db(db, options.trim_db)
    loud = db >= threshold
    if not loud.any():
        return samples, 0.0
    first = int(np.argmax(loud))
    start = first
    if options.trim == "intro":
        # pauses are looked for in 100 ms of smoothed energy: a noisy pause has frames
        # that poke above the threshold, a word has short gaps that do not end it
        smooth = _smoothed_db(db[first:], _PAUSE_FRAMES) >= threshold
        pause = _intro_frames(smooth, frame / rate, options)
        # what precedes the pause is an announcement only if it sounds like a voice
        if pause and _voiced(samples[first * frame:(first + pause[0]) * frame], rate):
            # the smoothing blurs the pause's end by half its width: the call starts at
            # the first frame loud on its own from there
            after = loud[first:]
            back = max(pause[0], pause[1] - _PAUSE_FRAMES // 2)
            onset = np.flatnonzero(after[back:])
            start += back + int(onset[0]) if onset.size else pause[1]
    cut = min(len(samples), start * frame)
    return samples[cut:], cut / rate


def _silence_db(db: np.ndarray, trim_db: float) -> float:
    """The level (dB below the loudest frame) under which a frame is silence.

    ``trim_db`` in a quiet recording; in a field recording, whose background noise
    never falls that low, a margin above the noise floor (the 10th percentile of the
    frames), but never above :data:`_SILENCE_CEILING_DB`, so that a recording loud
    throughout is not all silence.
    """
    finite = db[np.isfinite(db)]
    if not finite.size:
        return trim_db
    floor = float(np.percentile(finite, 10))
    return min(max(trim_db, floor + _FLOOR_MARGIN_DB), max(trim_db, _SILENCE_CEILING_DB))


def _smoothed_db(db: np.ndarray, width: int) -> np.ndarray:
    """Frame levels averaged (as energy) over ``width`` frames centred on each."""
    if width <= 1 or len(db) < width:
        return db
    energy = np.power(10.0, db / 10)  # -inf -> 0
    mean = np.convolve(energy, np.full(width, 1.0 / width), mode="same")
    with np.errstate(divide="ignore"):
        return 10 * np.log10(mean)


def _voiced(samples: np.ndarray, rate: int) -> bool:
    """Whether most of a stretch's energy lies in the band of a speaking voice.

    A voice's fundamental and first formant put most of its energy under about 1 kHz,
    while the calls of birds, insects and most frogs lie above it: a short stretch of
    sound before a pause is an announcement only when its 80-1000 Hz band holds at
    least half its energy above 80 Hz.
    """
    if len(samples) < 2:
        return False
    from scipy import fft

    power = np.abs(fft.rfft(samples.astype(np.float32))) ** 2
    hz = np.fft.rfftfreq(len(samples), 1.0 / rate)
    audible = power[hz >= _VOICE_BAND[0]].sum()
    voice = power[(hz >= _VOICE_BAND[0]) & (hz <= _VOICE_BAND[1])].sum()
    return bool(audible > 0 and voice >= _VOICE_SHARE * audible)


def _intro_frames(loud: np.ndarray, frame_seconds: float,
                  options: SoundOptions) -> tuple[int, int] | None:
    """The [start, end) frames of the first long-enough pause followed by sound, or None."""
    quiet = np.concatenate([[False], ~loud, [False]]).astype(np.int8)
    edges = np.diff(quiet)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [start, end)
    gap = math.ceil(options.intro_gap / frame_seconds - 1e-9)
    for start, end in zip(starts, ends):
        if end * frame_seconds > options.intro_max + 1e-9:
            break
        if end - start >= gap and end < len(loud):  # followed by sound
            return int(start), int(end)
    return None


def clip_starts(n_samples: int, rate: int, options: SoundOptions) -> np.ndarray:
    """The first sample of each clip of a recording of ``n_samples``.

    Clips start at 0, ``hop``, ``2 * hop`` ... while the whole window fits. A recording
    shorter than one window gives one clip (zero-padded). When the audio past the end
    of the last full clip (and past the next start on the grid) is at least half a
    window, one more, zero-padded, clip starts there; less than that is left out
    (under half a window, plus the gap when ``hop`` is longer than ``window``).

    Parameters
    ----------
    n_samples : int
        Length of the (trimmed) recording.
    rate : int
        Its sample rate, Hz.
    options : SoundOptions
        ``window`` and ``hop``.

    Returns
    -------
    numpy.ndarray
        int64 sample positions; empty for an empty recording.

    Examples
    --------
    >>> clip_starts(16000 * 5, 16000, SoundOptions()) / 16000
    array([0., 1., 2., 3.])
    >>> clip_starts(16000 * 5, 16000, SoundOptions(hop=2.0)) / 16000
    array([0., 2., 4.])
    >>> clip_starts(8000, 16000, SoundOptions())
    array([0])
    """
    window, hop = round(options.window * rate), options.hop * rate
    if n_samples <= 0:
        return np.zeros(0, np.int64)
    if n_samples < window:
        return np.zeros(1, np.int64)
    # the grid k * hop, each start moved to the nearest STFT frame (hop need not be a
    # whole number of frames: 1 s at 22050 Hz is 137.8 frames of 160 samples)
    step = options.hop_length
    grid = lambda k: int(round(k * hop / step)) * step  # noqa: E731
    count = 0
    while grid(count) + window <= n_samples:
        count += 1
    starts = np.array([grid(k) for k in range(count)], dtype=np.int64)
    last, following = int(starts[-1]), grid(count)
    fresh = n_samples - max(following, last + window)
    if 2 * fresh >= window:
        starts = np.append(starts, following)
    return starts


# --------------------------------------------------------------------------- spectrograms


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above (librosa's ``htk=False``)."""
    hz = np.asarray(hz, np.float64)
    step, low_mel, log_step = 200.0 / 3, 1000.0 / (200.0 / 3), math.log(6.4) / 27.0
    mels = hz / step
    above = hz >= 1000.0
    mels[above] = low_mel + np.log(hz[above] / 1000.0) / log_step
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    step, low_mel, log_step = 200.0 / 3, 1000.0 / (200.0 / 3), math.log(6.4) / 27.0
    hz = mels * step
    above = mels >= low_mel
    hz[above] = 1000.0 * np.exp(log_step * (mels[above] - low_mel))
    return hz


@functools.lru_cache(maxsize=32)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0],
                                   n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: each filter's area is the same
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters on the STFT bins: Slaney's mel scale and area normalization.

    The same matrix as ``librosa.filters.mel`` with its defaults (``htk=False``,
    ``norm="slaney"``), cached per parameter set.

    Parameters
    ----------
    sample_rate : int
        Hz.
    n_fft : int
        STFT frame length; the filters cover its ``1 + n_fft // 2`` bins.
    n_mels : int
        Filters.
    fmin, fmax : float, float or None
        Edges of the lowest and the highest filter, Hz; ``fmax`` None is
        ``sample_rate / 2``.

    Returns
    -------
    numpy.ndarray
        ``(n_mels, 1 + n_fft // 2)`` float32, read-only (shared by the cache).

    Examples
    --------
    >>> bank = mel_filterbank(16000, 512, 64, 50.0)
    >>> bank.shape, bank.dtype
    ((64, 257), dtype('float32'))
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    return _filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax))


@functools.lru_cache(maxsize=32)
def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (``scipy.signal.get_window("hann", n_fft)``)."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


@functools.lru_cache(maxsize=32)
def _full_scale_db(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> float:
    """dB of the mel power of a full-scale sine in the band most sensitive to one.

    A sine of amplitude 1 on bin k gives, through the periodic Hann window, power
    ``(n_fft / 4) ** 2`` on bin k and a quarter of it on each neighbour, and nothing
    elsewhere.
    """
    bank = _filterbank(sample_rate, n_fft, n_mels, fmin, fmax).astype(np.float64)
    response = bank[:, 1:-1] + 0.25 * (bank[:, :-2] + bank[:, 2:])
    return float(10 * np.log10(max(AMIN, (n_fft / 4) ** 2 * response.max())))


def _rfft() -> Callable[..., np.ndarray]:
    """scipy's real FFT (about three times numpy's in float32), numpy's without scipy."""
    try:
        from scipy.fft import rfft
    except ImportError:  # pragma: no cover - scipy comes with imagehash
        return np.fft.rfft
    return rfft


def _centred(samples: np.ndarray, length: int, half: int) -> np.ndarray:
    """``samples`` zero-padded to ``length``, then reflect-padded by ``half`` at both ends:
    the one copy of the recording that the STFT's frames are views of."""
    n = len(samples)
    total = max(n, length)
    if total <= half:  # too short to reflect once: numpy's repeated reflection
        return np.pad(np.pad(samples, (0, total - n)), half, mode="reflect")
    padded = np.zeros(total + 2 * half, np.float32)
    signal = padded[half:half + total]
    signal[:n] = samples
    padded[:half] = signal[half:0:-1]
    padded[half + total:] = signal[-2:-half - 2:-1]
    return padded


def _mel_power(samples: np.ndarray, options: SoundOptions, n_frames: int | None = None,
               length: int = 0) -> np.ndarray:
    """``(n_mels, frames)`` float32 mel power of a centred, reflect-padded STFT.

    ``samples`` are zero-padded to ``length`` first. Frames are views of the padded
    signal, transformed ``_FFT_CHUNK`` at a time; only the first ``n_frames`` are
    computed when given.
    """
    n_fft, hop = options.n_fft, options.hop_length
    samples = np.asarray(samples, dtype=np.float32)
    if max(len(samples), length) == 0:
        return np.zeros((options.n_mels, 0), np.float32)
    padded = _centred(samples, length, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    if n_frames is not None:
        frames = frames[:n_frames]
    window = _hann(n_fft)
    bank = _sparse_bank(options.sample_rate, n_fft, options.n_mels, *_band(options))
    rfft = _rfft()
    out = np.empty((options.n_mels, len(frames)), np.float32)
    for at in range(0, len(frames), _FFT_CHUNK):
        spectrum = rfft(frames[at:at + _FFT_CHUNK] * window, axis=1)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        out[:, at:at + _FFT_CHUNK] = bank @ power.T
    return out


@functools.lru_cache(maxsize=16)
def _sparse_bank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """The mel filterbank as a sparse matrix: each band spans a few FFT bins, and a
    sparse product runs in the calling thread, where a dense one would start BLAS
    threads that fight the worker's own threads for the cores (2x the CPU here)."""
    from scipy import sparse

    return sparse.csr_matrix(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


def _to_db(power: np.ndarray) -> np.ndarray:
    db = np.maximum(power, AMIN)
    np.log10(db, out=db)
    db *= 10
    return db


def log_mel(samples: np.ndarray, options: SoundOptions) -> np.ndarray:
    """The log-mel power spectrogram of mono samples at ``options.sample_rate``.

    STFT with a periodic Hann window of ``n_fft`` samples every ``hop_length``,
    centred (the signal reflect-padded by ``n_fft // 2`` at both ends), power 2,
    :func:`mel_filterbank`, then ``10 * log10(max(power, 1e-10))`` minus the reference:
    the loudest bin for ``normalize`` ``"clip"`` or ``"recording"`` (the samples are
    taken as one clip or one recording), else the full scale, the power of a
    full-scale sine in the band most sensitive to one. Not clipped to ``top_db``.

    As ``librosa.power_to_db(librosa.feature.melspectrogram(y=samples, ...,
    pad_mode="reflect"), ref=np.max, amin=1e-10, top_db=None)`` up to float32 rounding.

    Parameters
    ----------
    samples : numpy.ndarray
        ``(n,)`` samples.
    options : SoundOptions
        ``sample_rate``, ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax`` and
        ``normalize``.

    Returns
    -------
    numpy.ndarray
        ``(n_mels, 1 + n // hop_length)`` float32 dB, at most 0 unless ``normalize``
        is ``"none"`` and the sound is louder than the reference.

    Examples
    --------
    >>> t = np.arange(16000) / 16000
    >>> db = log_mel(np.sin(2 * np.pi * 1000 * t), SoundOptions(normalize="recording"))
    >>> db.shape, float(db.max())
    ((64, 101), 0.0)
    """
    db = _to_db(_mel_power(samples, options))
    return db - _reference_db(db, options)


def _reference_db(db: np.ndarray, options: SoundOptions) -> float:
    if options.normalize == "none" or db.size == 0:
        return _full_scale_db(options.sample_rate, options.n_fft, options.n_mels, *_band(options))
    return float(db.max())


def quantize(db: np.ndarray, top_db: float) -> np.ndarray:
    """dB relative to the reference (at most 0) to ``uint8``: 0 is ``-top_db`` or below, 255 is 0 dB.

    Linear in dB, ``top_db / 255`` dB a step; above 0 dB is 255, NaN is 0.

    Parameters
    ----------
    db : numpy.ndarray
        dB, any shape.
    top_db : float
        The range kept.

    Returns
    -------
    numpy.ndarray
        uint8 of the same shape.

    Examples
    --------
    >>> quantize(np.array([-100.0, -80.0, -40.0, 0.0, 3.0]), 80.0)
    array([  0,   0, 128, 255, 255], dtype=uint8)
    """
    scaled = np.asarray(db, np.float32) + np.float32(top_db)
    scaled *= np.float32(255.0 / top_db)
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    return np.nan_to_num(scaled, nan=0.0).astype(np.uint8)


def dequantize(values: np.ndarray, top_db: float) -> np.ndarray:
    """``uint8`` from :func:`quantize` back to dB relative to the reference (float32).

    Parameters
    ----------
    values : numpy.ndarray
        uint8 levels.
    top_db : float
        The range they were quantized with.

    Returns
    -------
    numpy.ndarray
        float32 dB from ``-top_db`` (0) to 0 (255), within half a step of what was
        quantized (when it was in range).

    Examples
    --------
    >>> dequantize(np.array([0, 128, 255], np.uint8), 80.0).astype(float).round(2).tolist()
    [-80.0, -39.84, 0.0]
    """
    return np.asarray(values, np.float32) * np.float32(top_db / 255.0) - np.float32(top_db)


def _clip_spectrograms(samples: np.ndarray, starts: np.ndarray, options: SoundOptions) -> np.ndarray:
    """Quantized log-mel of each clip, sliced out of one STFT over the whole recording."""
    end = int(starts[-1]) + round(options.window * options.sample_rate)  # past it: zero padding
    n_mels, frames = options.clip_shape
    first = starts // options.hop_length
    db = _to_db(_mel_power(samples, options, int(first[-1]) + frames, end))  # (n_mels, T)
    clips = np.lib.stride_tricks.sliding_window_view(db, frames, axis=1)[:, first].transpose(1, 0, 2)
    if options.normalize == "clip":
        # a clip more than top_db below the recording's loudest is not stretched further:
        # digital silence and padding stay dark instead of becoming 0 dB
        ref = np.maximum(clips.max(axis=(1, 2)), db.max() - options.top_db)[:, None, None]
    else:
        ref = _reference_db(db, options)
    return quantize(clips - ref, options.top_db)


# --------------------------------------------------------------------------- the whole path


def process_sound_bytes(data: bytes, options: SoundOptions) -> Clips:
    """Turn one recording's bytes into its clips' quantized log-mel spectrograms.

    :func:`decode_audio` (header checks, mono), refusal of a silent recording,
    :func:`resample` to ``sample_rate``, :func:`trim_start`, :func:`clip_starts`, one
    STFT over the whole trimmed recording whose frames are sliced into the clips
    (:func:`log_mel`), each clip normalized as ``normalize`` says and
    :func:`quantize`\\ d with ``top_db``.

    Parameters
    ----------
    data : bytes
        The whole file.
    options : SoundOptions
        How to decode, trim, cut and transform it.

    Returns
    -------
    Clips
        ``(k, n_mels, frames)`` uint8 spectrograms, their offsets in seconds of the
        source, the file's SHA-256, the source's duration, rate and channels, the
        seconds trimmed and the warnings of mended faults.

    Raises
    ------
    MediaError
        With one of :data:`SOUND_REASONS`; no other exception escapes for bad bytes.

    Examples
    --------
    >>> import io, soundfile
    >>> t = np.arange(44100 * 3) / 44100
    >>> buf = io.BytesIO()
    >>> soundfile.write(buf, 0.5 * np.sin(2 * np.pi * 1000 * t), 44100, format="WAV")
    >>> clips = process_sound_bytes(buf.getvalue(), SoundOptions())
    >>> clips.spectrograms.shape, clips.offsets.tolist(), clips.duration, clips.warnings
    ((2, 64, 201), [0.0, 1.0], 3.0, ())
    >>> process_sound_bytes(b"<!DOCTYPE html><p>Not Found</p>", SoundOptions())
    Traceback (most recent call last):
    ...
    idigdask.errors.MediaError: not_audio: libsndfile does not recognise these 31 bytes: they look like an HTML page
    """
    data = bytes(data)
    return _guarded(_process, data, options)


def _process(data: bytes, options: SoundOptions) -> Clips:
    digest = sha256_hex(data)
    decoded = _decode(data, options)
    samples = decoded.samples
    peak = _peak(samples)
    peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    if peak_dbfs < options.silence_dbfs:
        raise MediaError("silent", f"the peak is {peak_dbfs:.1f} dBFS, under {options.silence_dbfs:g} dBFS")
    duration = len(samples) / decoded.rate
    samples = resample(samples, decoded.rate, options.sample_rate)
    rest, trimmed = trim_start(samples, options.sample_rate, options)
    starts = clip_starts(len(rest), options.sample_rate, options)
    spectrograms = _clip_spectrograms(rest, starts, options)
    offsets = trimmed + starts / options.sample_rate
    return Clips(spectrograms, offsets.astype(np.float64), digest, duration, decoded.rate,
                 decoded.channels, trimmed, decoded.warnings)
