"""Loading and saving audio for MusicGen: checked, resampled, and written atomically.

All audio in this package is a float32 ``torch.Tensor`` shaped ``[channels, samples]``
(channels first, the torch / torchaudio convention), with samples nominally in ``[-1, 1]``.

- :func:`load_audio` reads a file (anything libsndfile reads: wav, flac, ogg/vorbis, mp3, ...)
  or takes an in-memory array, and optionally crops, converts channels, resamples and
  normalizes it.  Bad input fails early with a ``ValueError`` that says what was wrong.
- :func:`save_audio` writes a file atomically and never clips silently.
- :func:`to_mono`, :func:`convert_channels` and :func:`resample` are the building blocks.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Literal, Union

import numpy as np
import soundfile as sf
import soxr
import torch
from jaxtyping import Float

__all__ = ["load_audio", "save_audio", "check_save_path", "to_mono", "convert_channels", "resample"]

AudioArray = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]

# Peaks below this are treated as digital silence: normalizing or steering on them is meaningless.
SILENCE_THRESHOLD = 1e-8
# Where clip="limit" puts the peak; just under 1.0 so integer PCM encoders cannot wrap around.
LIMIT_PEAK = 0.999
# A 2-D array is only read as [channels, samples] when its first dim is no bigger than this or
# no bigger than its second dim; [16000, 2] is almost surely [samples, channels].
_MAX_PLAUSIBLE_CHANNELS = 16
# Extensions libsndfile cannot infer by itself.
_FORMAT_ALIASES = {"aif": ("AIFF", None), "opus": ("OGG", "OPUS")}


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _check_sr(sr: object, name: str = "sr") -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer, float, np.floating)):
        raise ValueError(f"{name} must be a positive integer sample rate in Hz, got {sr!r}")
    if isinstance(sr, (float, np.floating)) and not float(sr).is_integer():
        raise ValueError(f"{name} must be a whole number of Hz, got {sr!r}")
    if sr <= 0:
        raise ValueError(f"{name} must be a positive sample rate in Hz, got {sr!r}")
    return int(sr)


def _check_2d(audio: torch.Tensor | np.ndarray, what: str) -> None:
    shape = tuple(audio.shape)
    if len(shape) != 2:
        raise ValueError(f"{what} must be [samples] or [channels, samples], got shape {shape}")
    if shape[0] > _MAX_PLAUSIBLE_CHANNELS and shape[0] > shape[1]:
        raise ValueError(
            f"{what} has shape {shape}, which looks like [samples, channels]; channels-first "
            f"[channels, samples] is expected, so transpose it (e.g. audio.T)"
        )


def _check_content(audio: torch.Tensor, what: str, *, allow_silent: bool = False, overflow_note: str = "") -> None:
    """Reject audio nothing downstream can use: empty, non-finite or (unless allowed) all-silent."""
    if audio.numel() == 0:
        raise ValueError(f"{what} is empty (0 samples); expected at least one sample")
    if not torch.isfinite(audio).all():
        n_nan = int(torch.isnan(audio).sum())
        n_inf = int(torch.isinf(audio).sum())
        raise ValueError(
            f"{what} contains non-finite values ({n_nan} NaN, {n_inf} inf{overflow_note}); "
            "expected finite samples in [-1, 1]"
        )
    peak = float(audio.abs().max())
    if not allow_silent and peak < SILENCE_THRESHOLD:
        raise ValueError(
            f"{what} is all-silent (peak {peak:.3g} < {SILENCE_THRESHOLD:g}); expected audible audio"
        )


def _to_float_tensor(audio: AudioArray, what: str) -> torch.Tensor:
    """Array-like -> float32 CPU tensor; signed integer PCM is scaled to [-1, 1)."""
    if isinstance(audio, torch.Tensor):
        t = audio.detach().cpu()
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{what} must be real-valued audio, got dtype {t.dtype}")
        if not t.is_floating_point():
            if torch.iinfo(t.dtype).min == 0:
                raise ValueError(f"{what} has unsigned dtype {t.dtype}; expected float or signed PCM")
            return t.to(torch.float32) / float(torch.iinfo(t.dtype).max + 1)
        return t.to(torch.float32)
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind == "f":
            # not np.ascontiguousarray: it turns a 0-d array into 1-d and hides the bad shape
            return torch.from_numpy(audio.astype(np.float32, order="C", copy=False))
        if audio.dtype.kind == "i":
            scale = float(np.iinfo(audio.dtype).max) + 1.0
            return torch.from_numpy((audio.astype(np.float64) / scale).astype(np.float32))
        raise ValueError(f"{what} has dtype {audio.dtype}; expected float or signed integer PCM")
    raise TypeError(
        f"{what} must be a path, numpy array or torch tensor, got {type(audio).__name__}"
    )


def to_mono(audio: Float[torch.Tensor, "channels samples"]) -> Float[torch.Tensor, "1 samples"]:
    """Average all channels into one, keeping the ``[1, samples]`` shape."""
    return audio.mean(dim=0, keepdim=True)


def convert_channels(
    audio: Float[torch.Tensor, "channels samples"], channels: int
) -> Float[torch.Tensor, "out_channels samples"]:
    """Convert between mono and stereo: 1->2 duplicates the channel, 2->1 averages both.

    Other conversions (e.g. 6->2) need a downmix matrix we would have to guess, so they raise.
    """
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive integer (1 or 2), got {channels!r}")
    have = audio.shape[0]
    if have == channels:
        return audio
    if have == 1 and channels == 2:
        return audio.expand(2, -1).clone()
    if channels == 1:
        if have == 2:
            return to_mono(audio)
    raise ValueError(
        f"cannot convert {have}-channel audio to {channels} channels; "
        "only 1->2 (duplicate) and 2->1 (average) are supported, or pass mono=True to average"
    )


def resample(
    audio: Float[torch.Tensor, "channels samples"], sr_in: int, sr_out: int
) -> Float[torch.Tensor, "channels new_samples"]:
    """Resample with soxr (``quality="HQ"``); returns ``audio`` unchanged when rates match."""
    sr_in = _check_sr(sr_in, "sr_in")
    sr_out = _check_sr(sr_out, "sr_out")
    if sr_in == sr_out:
        return audio
    device = audio.device
    # soxr wants [samples, channels]; the copy makes it contiguous.
    x = np.ascontiguousarray(audio.detach().cpu().to(torch.float32).numpy().T)
    y = soxr.resample(x, sr_in, sr_out, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(y.T)).to(device)


def _db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


# WAVE format tags whose data chunk holds exactly block_align bytes per frame: PCM, IEEE float,
# A-law, mu-law, and WAVE_FORMAT_EXTENSIBLE (whose sub-format libsndfile only reads when it is one
# of these). Compressed formats (ADPCM, GSM, ...) pack many frames into one block.
_WAV_PLAIN_FORMATS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}
# A data chunk size some writers leave when they stream and cannot seek back: "to the end".
_WAV_UNKNOWN_SIZES = {0, 0xFFFFFFFF}


def _header_frames(path: Path) -> int | None:
    """How many frames a WAV (RIFF/RIFX) or AIFF/AIFC header promises; None for other formats or
    when the header leaves it open. libsndfile quietly shortens its own frame count to what the
    file holds, so a truncated file can only be told from the header itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
                order, aiff = ("<" if head[:4] == b"RIFF" else ">"), False
            elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                order, aiff = ">", True
            else:
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], int.from_bytes(chunk[4:], "little" if order == "<" else "big")
                if aiff and cid == b"COMM":
                    comm = f.read(6)
                    return int.from_bytes(comm[2:6], "big") if len(comm) == 6 else None
                if not aiff and cid == b"fmt ":
                    fmt = f.read(min(size, 16))
                    if len(fmt) < 14:
                        return None
                    tag = int.from_bytes(fmt[0:2], "little" if order == "<" else "big")
                    block_align = int.from_bytes(fmt[12:14], "little" if order == "<" else "big")
                    if tag not in _WAV_PLAIN_FORMATS or block_align <= 0:
                        return None
                    f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
                    continue
                if not aiff and cid == b"data":
                    if block_align is None or size in _WAV_UNKNOWN_SIZES:
                        return None
                    return size // block_align
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def _read_file(path: Path, offset: float, duration: float | None) -> tuple[torch.Tensor, int]:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"expected an audio file but {str(path)!r} is a directory")
    try:
        f = sf.SoundFile(str(path))
    except sf.LibsndfileError as e:
        raise ValueError(
            f"could not read audio file {str(path)!r}: {e.error_string}; expected a format "
            "libsndfile reads (wav, flac, ogg, mp3, ...)"
        ) from e
    with f:
        sr = f.samplerate
        total = f.frames
        promised = _header_frames(path)
        if promised is not None and promised > total:
            raise ValueError(
                f"audio file {str(path)!r} is truncated: its header promises {promised} frames "
                f"({promised / sr:.3f}s) but it holds {total} ({total / sr:.3f}s); "
                "expected a complete file (re-export or re-copy it)"
            )
        start = int(round(offset * sr))
        if offset > 0 and start >= total:
            raise ValueError(
                f"offset={offset}s is beyond the end of {str(path)!r} "
                f"({total / sr:.3f}s long); expected 0 <= offset < duration of the file"
            )
        frames = -1 if duration is None else max(1, int(round(duration * sr)))
        want = total - start if frames < 0 else min(frames, total - start)
        try:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise ValueError(
                f"audio file {str(path)!r} is corrupt or truncated: it opened as {f.format} "
                f"({total} frames) but decoding failed ({getattr(e, 'error_string', e)}); "
                "expected a complete, readable file"
            ) from e
        if total > 0 and len(data) < want:
            raise ValueError(
                f"audio file {str(path)!r} is truncated or corrupt: its header promises {total} frames "
                f"but reading frames {start}..{start + want} gave only {len(data)}; expected a complete file"
            )
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def load_audio(
    path_or_array: PathLike | AudioArray,
    target_sr: int | None = None,
    mono: bool | None = None,
    *,
    sr: int | None = None,
    channels: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    normalize: float | None = None,
    loudness_db: float | None = None,
) -> tuple[Float[torch.Tensor, "channels samples"], int]:
    """Load audio as a float32 ``[channels, samples]`` tensor, plus its sample rate.

    Args:
        path_or_array: a path to anything libsndfile reads (wav, flac, ogg/vorbis, mp3, ...), or
            an in-memory numpy array / torch tensor shaped ``[samples]`` or ``[channels, samples]``.
            Float arrays are taken as is; signed-integer arrays are PCM and scaled to ``[-1, 1)``.
        target_sr: resample (soxr, "HQ") to this rate if it differs from the source rate.
        mono: ``True`` averages all channels into one. Exclusive with ``channels``.
        sr: the sample rate of an in-memory array (required for arrays, refused for paths).
        channels: ``1`` or ``2``; 1->2 duplicates, 2->1 averages. Exclusive with ``mono``.
        offset: seconds to skip from the start (files: only the needed part is read).
        duration: seconds to keep after ``offset`` (``None``: to the end; clipped at the end).
        normalize: target *peak* level in dBFS (``<= 0``), e.g. ``-1.0`` scales so that
            ``max|x| == 10 ** (-1 / 20)``. ``None`` leaves the level alone.
        loudness_db: target *RMS* level in dBFS, e.g. ``-20.0`` scales so that the RMS over all
            channels and samples is 0.1. The peak may then exceed 1.0; :func:`save_audio` deals
            with that. Exclusive with ``normalize``.

    Returns:
        ``(audio, sample_rate)`` with ``audio`` float32 on the CPU; ``sample_rate`` is
        ``target_sr`` when given.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unreadable, truncated (a WAV/AIFF header promising more frames than the file
            holds, or a decode error part-way) or corrupt file, wrong shape, missing/non-positive
            ``sr``, empty, NaN/inf (also after resampling) or all-silent audio, bad channel count,
            ``offset``/``duration`` out of range.

    Order of operations: crop, check, convert channels, resample, normalize.
    """
    for name, value in (("offset", offset), ("duration", duration), ("normalize", normalize), ("loudness_db", loudness_db)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))):
            raise TypeError(f"{name} must be a number{' of seconds' if name in ('offset', 'duration') else ''}, got {value!r} ({type(value).__name__})")
    if offset is None or not math.isfinite(offset) or offset < 0:
        raise ValueError(f"offset must be a finite number of seconds >= 0, got {offset!r}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"duration must be a positive number of seconds (or None), got {duration!r}")
    if mono is not None and channels is not None:
        raise ValueError("pass either mono=True or channels=N, not both")
    if normalize is not None and loudness_db is not None:
        raise ValueError("pass either normalize (peak dBFS) or loudness_db (RMS dBFS), not both")
    if normalize is not None and (not math.isfinite(normalize) or normalize > 0):
        raise ValueError(
            f"normalize is a target peak in dBFS and must be <= 0 (e.g. -1.0), got {normalize!r}"
        )
    if loudness_db is not None and not math.isfinite(loudness_db):
        raise ValueError(f"loudness_db must be a finite RMS level in dBFS, got {loudness_db!r}")
    if target_sr is not None:
        target_sr = _check_sr(target_sr, "target_sr")

    overflow_note = ""
    if isinstance(path_or_array, (str, os.PathLike)):
        if sr is not None:
            raise ValueError(
                "sr= is only for in-memory arrays (a file knows its own rate); "
                "use target_sr= to resample"
            )
        path = Path(path_or_array)
        what = f"audio file {str(path)!r}"
        audio, sr_in = _read_file(path, offset, duration)
        if not torch.isfinite(audio).all() and not torch.isnan(audio).any():
            # a DOUBLE file can hold finite samples beyond float32's range (~3.4e38)
            overflow_note = "; samples beyond float32's range read as inf" if sf.info(str(path)).subtype == "DOUBLE" else ""
    else:
        what = "audio array"
        shape = tuple(getattr(path_or_array, "shape", ()))
        if sr is None:
            raise ValueError(
                f"sr= is needed for in-memory arrays (got an array of shape {shape} without a "
                "sample rate); pass e.g. load_audio(array, sr=32000)"
            )
        sr_in = _check_sr(sr, "sr")
        audio = _to_float_tensor(path_or_array, what)
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        _check_2d(audio, what)
        total = audio.shape[1]
        start = int(round(offset * sr_in))
        if offset > 0 and start >= total:
            raise ValueError(
                f"offset={offset}s is beyond the end of the {what} ({total / sr_in:.3f}s long); "
                "expected 0 <= offset < its duration"
            )
        stop = total if duration is None else start + max(1, int(round(duration * sr_in)))
        audio = audio[:, start:stop]

    _check_content(audio, what, overflow_note=overflow_note)

    if mono:
        audio = to_mono(audio)
    elif channels is not None:
        audio = convert_channels(audio, channels)

    if target_sr is not None and target_sr != sr_in:
        peak = float(audio.abs().max())
        audio = resample(audio, sr_in, target_sr)
        if not torch.isfinite(audio).all():
            raise ValueError(
                f"{what}: resampling {sr_in} -> {target_sr} Hz produced non-finite values because its "
                f"samples are far outside [-1, 1] (peak {peak:.3g}); expected audio nominally in [-1, 1]"
            )
        sr_in = target_sr

    if normalize is not None:
        audio = audio * (_db_to_gain(normalize) / float(audio.abs().max()))
    elif loudness_db is not None:
        rms = float(audio.double().pow(2).mean().sqrt())
        audio = audio * (_db_to_gain(loudness_db) / rms)

    return audio.contiguous(), sr_in


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------


def _writable_extensions() -> list[str]:
    """Extensions save_audio can write: libsndfile's formats (not headerless RAW) and aliases."""
    exts = {f.lower() for f in sf.available_formats() if f != "RAW"} | set(_FORMAT_ALIASES)
    first = [e for e in ("wav", "flac", "ogg", "mp3") if e in exts]
    return first + sorted(exts - set(first))


def _format_for(path: Path) -> tuple[str, str | None]:
    ext = path.suffix.lower().lstrip(".")
    if ext in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[ext]
    fmt = ext.upper()
    if not ext or fmt == "RAW" or fmt not in sf.available_formats():
        supported = ", ".join("." + e for e in _writable_extensions())
        raise ValueError(
            f"cannot tell the audio format from {str(path)!r} "
            f"({'extension .' + ext if ext else 'no extension'}); use an extension libsndfile writes: {supported}"
        )
    return fmt, None


def check_save_path(path: PathLike, subtype: str | None = None, *, create_dirs: bool = False) -> Path:
    """Check that :func:`save_audio` could write ``path``, without writing anything: a known
    extension (and ``subtype``), not an existing directory, and a directory to write into that
    exists or (``create_dirs=True``) could be created. Cheap: call it before a long computation
    whose result is to be saved there.

    Raises:
        ValueError: unknown extension or subtype, or ``path`` is a directory.
        FileNotFoundError: the directory does not exist (and ``create_dirs`` is False).
        NotADirectoryError: a component of the directory is a file.
        PermissionError: the directory (or, with ``create_dirs``, its nearest existing parent)
            is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot save audio to {str(path)!r}: it is a directory; expected a file name such as {str(path / 'out.wav')!r}")
    fmt, default_subtype = _format_for(path)
    subtype = subtype if subtype is not None else default_subtype
    if subtype is not None and not sf.check_format(fmt, subtype):
        raise ValueError(
            f"subtype {subtype!r} cannot be written as {fmt}; "
            f"available: {sorted(sf.available_subtypes(fmt))}"
        )
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"cannot save {str(path)!r}: {str(existing)!r} is a file, not a directory; expected a path inside a directory"
        )
    if existing != directory and not create_dirs:
        raise FileNotFoundError(f"cannot save {str(path)!r}: directory {str(directory)!r} does not exist")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save {str(path)!r}: directory {str(existing)!r} is not writable")
    return path


def save_audio(
    path: PathLike,
    audio: AudioArray,
    sr: int,
    *,
    clip: Literal["limit", "error", "warn"] = "limit",
    subtype: str | None = None,
) -> Path:
    """Write audio to ``path`` atomically; the format comes from the extension (wav/flac/ogg/...).

    Args:
        path: destination; its directory must exist. Replaced atomically if it exists.
        audio: ``[samples]``, ``[channels, samples]`` or ``[1, channels, samples]`` (a batch of
            one, as MusicGen returns); numpy or torch, any device.
        sr: sample rate in Hz.
        clip: what to do when ``max|audio| > 1.0``, checked for every subtype so a file never
            depends on whether the encoder happens to clip:

            - ``"limit"`` (default): scale the whole signal so its peak is 0.999 and warn by how
              many dB it was turned down (waveform shape preserved, no distortion);
            - ``"warn"``: hard-clip to ``[-1, 1]`` and warn how many samples were clipped;
            - ``"error"``: raise ``ValueError``.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``; ``None`` uses
            libsndfile's default for the format (PCM_16 for wav and flac, VORBIS for ogg).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: empty or NaN/inf audio, wrong shape (including a batch of more than one),
            non-positive ``sr``, unknown extension or subtype, peak above 1.0 with
            ``clip="error"``. All-silent audio is written (it is valid, if dull).
        FileNotFoundError: the destination directory does not exist (see :func:`check_save_path`,
            which checks all of this before any audio exists).

    The data goes to a hidden temporary file next to ``path`` (same extension, so libsndfile
    sees the same format) which is then ``os.replace``-d over it; if anything fails, including
    ``KeyboardInterrupt``, the temporary file is removed and an existing ``path`` is untouched.
    """
    if clip not in ("limit", "error", "warn"):
        raise ValueError(f"clip must be 'limit', 'error' or 'warn', got {clip!r}")
    path = Path(path)
    sr = _check_sr(sr, "sr")
    fmt, default_subtype = _format_for(path)
    subtype = subtype if subtype is not None else default_subtype
    check_save_path(path, subtype)

    what = "audio to save"
    if isinstance(audio, torch.Tensor):
        t = audio.detach().cpu()
        # keep float64 as is so subtype="DOUBLE" stays exact
        data = t.numpy() if t.dtype == torch.float64 else _to_float_tensor(t, what).numpy()
    elif isinstance(audio, np.ndarray):
        data = audio if audio.dtype in (np.float32, np.float64) else _to_float_tensor(audio, what).numpy()
    else:
        raise TypeError(f"audio must be a numpy array or torch tensor, got {type(audio).__name__}")
    if data.ndim == 3:
        if data.shape[0] != 1:
            raise ValueError(
                f"audio has shape {tuple(data.shape)}: a batch of {data.shape[0]}; "
                "save each item separately, e.g. save_audio(f'out_{i}.wav', audio[i], sr)"
            )
        data = data[0]
    elif data.ndim == 1:
        data = data[None, :]
    _check_2d(data, what)
    # silence is a legitimate thing to write (unlike to load and normalize), so only these checks
    _check_content(torch.from_numpy(np.ascontiguousarray(data)), what, allow_silent=True)

    peak = float(np.abs(data).max())
    if peak > 1.0:
        over_db = 20.0 * math.log10(peak)
        if clip == "error":
            raise ValueError(
                f"audio peak is {peak:.4f} (+{over_db:.2f} dBFS), above 1.0; it would clip. "
                "Scale it down first, or pass clip='limit' or clip='warn'"
            )
        if clip == "limit":
            gain = LIMIT_PEAK / peak
            data = data * np.asarray(gain, dtype=data.dtype)
            warnings.warn(
                f"audio peak {peak:.4f} (+{over_db:.2f} dBFS) exceeds 1.0; scaled down by "
                f"{-20.0 * math.log10(gain):.2f} dB to peak {LIMIT_PEAK} to avoid clipping",
                stacklevel=2,
            )
        else:
            n_over = int((np.abs(data) > 1.0).sum())
            data = np.clip(data, -1.0, 1.0)
            warnings.warn(
                f"audio peak {peak:.4f} (+{over_db:.2f} dBFS) exceeds 1.0; hard-clipped "
                f"{n_over} samples to [-1, 1]",
                stacklevel=2,
            )

    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(4)}{path.suffix}"
    try:
        # O_EXCL so we never clobber someone else's temp file; mode 0o666 lets the umask decide
        # the final permissions like a plain open() would (mkstemp would force 0o600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        sf.write(str(tmp), np.ascontiguousarray(data.T), sr, subtype=subtype, format=fmt)
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path
