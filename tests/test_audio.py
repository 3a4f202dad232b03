"""Tests for musicgen_lens.audio: loading, resampling, channel conversion, checks, atomic saves."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from musicgen_lens import audio as A

RATES = [8000, 16000, 22050, 44100, 48000]
FORMATS = ["wav", "flac", "ogg"]
# subtypes used to write the fixtures: as precise as each format allows
FIXTURE_SUBTYPE = {"wav": "FLOAT", "flac": "PCM_24", "ogg": "VORBIS"}
HAS_OGG = "OGG" in sf.available_formats() and "VORBIS" in sf.available_subtypes("OGG")
HAS_MP3 = "MP3" in sf.available_formats()


def _need(fmt: str) -> None:
    if fmt == "ogg" and not HAS_OGG:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} here has no OGG/Vorbis support")
    if fmt == "mp3" and not HAS_MP3:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} here has no MP3 support")


def sine(sr: int, seconds: float = 0.25, channels: int = 1) -> np.ndarray:
    """Deterministic [channels, samples] float32 test tone, different per channel."""
    t = np.arange(int(round(seconds * sr))) / sr
    freqs = [440.0, 660.0, 550.0]
    amps = [0.5, 0.3, 0.4]
    return np.stack(
        [amps[c] * np.sin(2 * np.pi * freqs[c] * t + 0.3 * c) for c in range(channels)]
    ).astype(np.float32)


def write_fixture(path: Path, x: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    fmt = path.suffix.lstrip(".")
    sf.write(str(path), x.T, sr, subtype=subtype or FIXTURE_SUBTYPE[fmt])
    return path


def decoded(path: Path) -> np.ndarray:
    """What libsndfile itself decodes, [channels, samples] (the reference for lossy formats)."""
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T


def soxr_ref(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    return soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ").T


# ---------------------------------------------------------------------------------------------
# loading files: shape, rate, resampling, channels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("nch", [1, 2])
@pytest.mark.parametrize("sr", RATES)
def test_load_file_shape_rate_and_resample(tmp_path, fmt, nch, sr):
    _need(fmt)
    x = sine(sr, channels=nch)
    path = write_fixture(tmp_path / f"tone.{fmt}", x, sr)

    audio, got_sr = A.load_audio(path)
    assert got_sr == sr
    assert audio.dtype == torch.float32
    assert tuple(audio.shape) == x.shape
    ref = decoded(path)
    np.testing.assert_array_equal(audio.numpy(), ref)
    if fmt != "ogg":  # lossless: the decode is the tone itself (up to 24-bit quantization for flac)
        np.testing.assert_allclose(audio.numpy(), x, atol=2.0**-23 if fmt == "flac" else 0)

    res, res_sr = A.load_audio(str(path), target_sr=32000)
    assert res_sr == 32000
    expected = soxr_ref(ref, sr, 32000)
    assert tuple(res.shape) == expected.shape
    assert abs(res.shape[1] - round(x.shape[1] * 32000 / sr)) <= 1
    np.testing.assert_allclose(res.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_channel_conversion_from_files(tmp_path, fmt):
    _need(fmt)
    sr = 22050
    mono_path = write_fixture(tmp_path / f"m.{fmt}", sine(sr, channels=1), sr)
    stereo_path = write_fixture(tmp_path / f"s.{fmt}", sine(sr, channels=2), sr)
    m, s = torch.from_numpy(decoded(mono_path)), torch.from_numpy(decoded(stereo_path))

    up, _ = A.load_audio(mono_path, channels=2)
    assert up.shape == (2, m.shape[1])
    assert torch.equal(up[0], m[0]) and torch.equal(up[1], m[0])

    expected_mono = ((s[0] + s[1]) / 2).unsqueeze(0)
    for kwargs in ({"channels": 1}, {"mono": True}):
        down, _ = A.load_audio(stereo_path, **kwargs)
        assert down.shape == (1, s.shape[1])
        torch.testing.assert_close(down, expected_mono, rtol=0, atol=0)

    # conversion happens before resampling, so resample(convert(x)) is the reference
    both, sr_out = A.load_audio(stereo_path, 32000, True)
    assert sr_out == 32000
    np.testing.assert_allclose(both.numpy(), soxr_ref(expected_mono.numpy(), sr, 32000), atol=1e-6)

    same, _ = A.load_audio(stereo_path, channels=2)
    assert torch.equal(same, s)
    keep, _ = A.load_audio(stereo_path, mono=False)
    assert torch.equal(keep, s)


def test_target_sr_equal_to_source_is_untouched(tmp_path):
    x = sine(16000, channels=2)
    path = write_fixture(tmp_path / "a.wav", x, 16000)
    audio, sr = A.load_audio(path, target_sr=16000)
    assert sr == 16000
    np.testing.assert_array_equal(audio.numpy(), x)


def test_load_mp3_when_supported(tmp_path):
    _need("mp3")
    x = sine(44100, channels=2)
    path = tmp_path / "a.mp3"
    sf.write(str(path), x.T, 44100)
    audio, sr = A.load_audio(path, target_sr=32000)
    assert sr == 32000 and audio.shape[0] == 2
    np.testing.assert_allclose(audio.numpy(), soxr_ref(decoded(path), 44100, 32000), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# in-memory arrays
# ---------------------------------------------------------------------------------------------


def test_arrays_numpy_torch_1d_2d():
    x = sine(16000, channels=2)
    a, sr = A.load_audio(x, sr=16000)
    assert sr == 16000 and a.dtype == torch.float32
    np.testing.assert_array_equal(a.numpy(), x)

    b, _ = A.load_audio(torch.from_numpy(x).double(), sr=16000)
    torch.testing.assert_close(b, torch.from_numpy(x))

    c, _ = A.load_audio(x[0], sr=16000)
    assert c.shape == (1, x.shape[1])

    r, sr2 = A.load_audio(torch.from_numpy(x), target_sr=32000, sr=16000)
    assert sr2 == 32000
    np.testing.assert_allclose(r.numpy(), soxr_ref(x, 16000, 32000), atol=1e-6)

    # the caller's array must not be modified by normalization
    before = x.copy()
    A.load_audio(x, sr=16000, normalize=-6.0)
    np.testing.assert_array_equal(x, before)


def test_integer_pcm_arrays_are_scaled():
    pcm = np.array([[0, 16384, -32768, 32767]], dtype=np.int16)
    a, _ = A.load_audio(pcm, sr=8000)
    np.testing.assert_allclose(a.numpy(), pcm / 32768.0)
    with pytest.raises(ValueError, match="unsigned|dtype"):
        A.load_audio(np.ones((1, 10), dtype=np.uint8), sr=8000)


# ---------------------------------------------------------------------------------------------
# offset / duration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_offset_duration_from_file(tmp_path, fmt):
    _need(fmt)
    sr = 16000
    x = sine(sr, seconds=0.5, channels=2)
    path = write_fixture(tmp_path / f"a.{fmt}", x, sr)
    ref = decoded(path)

    part, got_sr = A.load_audio(path, offset=0.1, duration=0.05)
    assert got_sr == sr and part.shape == (2, 800)
    if fmt == "ogg":  # a seek decodes on its own; compare with libsndfile's own seek
        seek_ref, _ = sf.read(str(path), start=1600, frames=800, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(part.numpy(), seek_ref.T)
        np.testing.assert_allclose(part.numpy(), ref[:, 1600:2400], atol=1e-4)
    else:
        np.testing.assert_array_equal(part.numpy(), ref[:, 1600:2400])

    tail, _ = A.load_audio(path, offset=0.45)
    assert tail.shape == (2, 800)
    long, _ = A.load_audio(path, offset=0.4, duration=10.0)  # clipped at the end
    assert long.shape == (2, 1600)


def test_offset_duration_on_arrays_and_resample():
    x = sine(8000, seconds=0.5, channels=1)
    part, _ = A.load_audio(x, sr=8000, offset=0.125, duration=0.25)
    np.testing.assert_array_equal(part.numpy(), x[:, 1000:3000])
    res, _ = A.load_audio(x, 16000, sr=8000, offset=0.125, duration=0.25)
    np.testing.assert_allclose(res.numpy(), soxr_ref(x[:, 1000:3000], 8000, 16000), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------------------------


def test_peak_and_rms_normalization():
    x = sine(16000, channels=2)
    peak, _ = A.load_audio(x, sr=16000, normalize=-6.0)
    assert float(peak.abs().max()) == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    gain = 10 ** (-6 / 20) / np.abs(x).max()  # one gain for all channels: balance kept
    np.testing.assert_allclose(peak.numpy(), x * gain, rtol=1e-5, atol=1e-7)

    loud, _ = A.load_audio(x, sr=16000, loudness_db=-20.0)
    assert float(loud.double().pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-5)

    with pytest.raises(ValueError, match="not both"):
        A.load_audio(x, sr=16000, normalize=-1.0, loudness_db=-20.0)
    with pytest.raises(ValueError, match="<= 0"):
        A.load_audio(x, sr=16000, normalize=3.0)


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array, kwargs, exc, match",
    [
        (np.zeros((1, 0), np.float32), {"sr": 16000}, ValueError, "empty"),
        (np.zeros(0, np.float32), {"sr": 16000}, ValueError, "empty"),
        (np.array([[0.1, np.nan, 0.2]], np.float32), {"sr": 16000}, ValueError, "NaN"),
        (np.array([[0.1, np.inf, 0.2]], np.float32), {"sr": 16000}, ValueError, "inf"),
        (np.array([[0.1, -np.inf, 0.2]], np.float32), {"sr": 16000}, ValueError, "non-finite"),
        (np.zeros((2, 100), np.float32), {"sr": 16000}, ValueError, "all-silent"),
        (np.full((1, 100), 1e-9, np.float32), {"sr": 16000}, ValueError, "all-silent"),
        (np.zeros((1, 2, 100), np.float32), {"sr": 16000}, ValueError, r"shape \(1, 2, 100\)"),
        (np.zeros(()), {"sr": 16000}, ValueError, r"shape \(\)"),
        (sine(16000, channels=2), {}, ValueError, "sr= is needed"),
        (sine(16000, channels=2).T, {"sr": 16000}, ValueError, "transpose"),
        (sine(16000), {"sr": 0}, ValueError, "positive"),
        (sine(16000), {"sr": -16000}, ValueError, "positive"),
        (sine(16000), {"sr": 16000, "target_sr": 0}, ValueError, "target_sr"),
        (sine(16000, channels=2), {"sr": 16000, "channels": 3}, ValueError, "2-channel audio to 3"),
        (sine(16000, channels=3), {"sr": 16000, "channels": 2}, ValueError, "3-channel"),
        (sine(16000), {"sr": 16000, "channels": 0}, ValueError, "positive integer"),
        (sine(16000), {"sr": 16000, "mono": True, "channels": 1}, ValueError, "not both"),
        (sine(16000), {"sr": 16000, "offset": 0.25}, ValueError, "beyond the end"),
        (sine(16000), {"sr": 16000, "offset": 5.0}, ValueError, "beyond the end"),
        (sine(16000), {"sr": 16000, "offset": -0.1}, ValueError, "offset"),
        (sine(16000), {"sr": 16000, "duration": 0.0}, ValueError, "duration"),
        (sine(16000), {"sr": 16000, "duration": -1.0}, ValueError, "duration"),
        ([0.1, 0.2], {"sr": 16000}, TypeError, "list"),
    ],
)
def test_bad_arrays(array, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        A.load_audio(array, **kwargs)


def test_silent_part_of_file_is_rejected(tmp_path):
    x = np.zeros((1, 16000), np.float32)
    x[0, 8000:] = sine(16000, seconds=0.5)[0]
    path = write_fixture(tmp_path / "half.wav", x, 16000)
    assert A.load_audio(path)[0].shape == (1, 16000)
    with pytest.raises(ValueError, match="all-silent"):
        A.load_audio(path, duration=0.25)


def test_bad_files(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        A.load_audio(missing)

    text = tmp_path / "x.wav"
    text.write_bytes(b"this is not audio, just some text pretending to be a wav\n" * 4)
    with pytest.raises(ValueError, match=r"could not read audio file .*x\.wav.*: .+"):
        A.load_audio(text)

    with pytest.raises(ValueError, match="directory"):
        A.load_audio(tmp_path)

    path = write_fixture(tmp_path / "a.flac", sine(16000), 16000)
    with pytest.raises(ValueError, match="beyond the end"):
        A.load_audio(path, offset=0.25)
    with pytest.raises(ValueError, match="only for in-memory arrays"):
        A.load_audio(path, sr=16000)

    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        A.load_audio(empty)

    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN"):
        A.load_audio(nan)


def test_helpers():
    x = torch.from_numpy(sine(8000, channels=2))
    torch.testing.assert_close(A.to_mono(x), x.mean(0, keepdim=True))
    assert torch.equal(A.convert_channels(x[:1], 2), x[:1].repeat(2, 1))
    assert A.convert_channels(x, 2) is x
    assert A.resample(x, 8000, 8000) is x
    np.testing.assert_allclose(A.resample(x, 8000, 22050).numpy(), soxr_ref(x.numpy(), 8000, 22050))
    with pytest.raises(ValueError, match="sr_out"):
        A.resample(x, 8000, -1)


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, subtype, atol",
    [
        ("wav", "FLOAT", 0.0),
        ("wav", "DOUBLE", 0.0),
        ("wav", "PCM_16", 1 / 32768),
        ("wav", None, 1 / 32768),  # libsndfile default: PCM_16
        ("wav", "PCM_24", 2.0**-23),
        ("flac", "PCM_16", 1 / 32768),
        ("flac", "PCM_24", 2.0**-23),
        ("ogg", None, 0.05),  # lossy
    ],
)
@pytest.mark.parametrize("nch", [1, 2])
def test_round_trip(tmp_path, fmt, subtype, atol, nch):
    _need(fmt)
    x = sine(22050, channels=nch)
    out = A.save_audio(tmp_path / f"rt.{fmt}", torch.from_numpy(x), 22050, subtype=subtype)
    assert out == tmp_path / f"rt.{fmt}" and out.exists()
    y, sr = A.load_audio(out)
    assert sr == 22050 and y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), x, rtol=0, atol=atol)
    if subtype is not None:
        assert sf.info(str(out)).subtype == subtype
    assert sorted(os.listdir(tmp_path)) == [f"rt.{fmt}"]


def test_save_shapes_and_types(tmp_path):
    x = sine(16000, channels=2)
    p = A.save_audio(str(tmp_path / "batch1.wav"), torch.from_numpy(x)[None], 16000, subtype="FLOAT")
    assert isinstance(p, Path)
    np.testing.assert_array_equal(decoded(p), x)

    p = A.save_audio(tmp_path / "flat.wav", x[0], 16000, subtype="FLOAT")
    np.testing.assert_array_equal(decoded(p), x[:1])

    silent = A.save_audio(tmp_path / "silent.wav", np.zeros((1, 100), np.float32), 16000)
    assert sf.info(str(silent)).frames == 100

    with pytest.raises(ValueError, match="save each item"):
        A.save_audio(tmp_path / "b.wav", np.stack([x, x]), 16000)
    with pytest.raises(ValueError, match="transpose"):
        A.save_audio(tmp_path / "t.wav", x.T, 16000)
    with pytest.raises(ValueError, match="NaN"):
        A.save_audio(tmp_path / "n.wav", np.array([0.1, np.nan], np.float32), 16000)
    with pytest.raises(ValueError, match="inf"):
        A.save_audio(tmp_path / "i.wav", np.array([0.1, np.inf], np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        A.save_audio(tmp_path / "e.wav", np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(ValueError, match="format"):
        A.save_audio(tmp_path / "x.xyz", x, 16000)
    with pytest.raises(ValueError, match="subtype"):
        A.save_audio(tmp_path / "x.flac", x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="positive"):
        A.save_audio(tmp_path / "x.wav", x, 0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        A.save_audio(tmp_path / "no_such_dir" / "x.wav", x, 16000)
    assert sorted(os.listdir(tmp_path)) == ["batch1.wav", "flat.wav", "silent.wav"]


def test_save_never_clips_silently(tmp_path):
    x = sine(16000, channels=2) * 4.0  # peak 2.0
    with pytest.warns(UserWarning, match=r"scaled down by 6\.0\d dB"):
        p = A.save_audio(tmp_path / "lim.wav", x, 16000, subtype="FLOAT")
    y = decoded(p)
    assert np.abs(y).max() <= 1.0
    assert np.abs(y).max() == pytest.approx(A.LIMIT_PEAK, rel=1e-6)
    np.testing.assert_allclose(y, x * (A.LIMIT_PEAK / np.abs(x).max()), rtol=1e-6)  # shape kept

    with pytest.raises(ValueError, match="clip"):
        A.save_audio(tmp_path / "err.wav", x, 16000, clip="error")
    assert not (tmp_path / "err.wav").exists()

    with pytest.warns(UserWarning, match="hard-clipped"):
        p = A.save_audio(tmp_path / "clip.wav", x, 16000, clip="warn", subtype="FLOAT")
    np.testing.assert_array_equal(decoded(p), np.clip(x, -1, 1))

    with pytest.raises(ValueError, match="clip must be"):
        A.save_audio(tmp_path / "bad.wav", x, 16000, clip="nope")

    # a peak of exactly 1.0 is fine and untouched
    ok = x / np.abs(x).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = A.save_audio(tmp_path / "ok.wav", ok, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(decoded(p), ok)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("pre_existing", [False, True])
def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch, exc, pre_existing):
    target = tmp_path / "out.wav"
    if pre_existing:
        target.write_bytes(b"old content")
    before = sorted(os.listdir(tmp_path))
    seen = []

    def partial_write(file, data, samplerate, *args, **kwargs):
        seen.append(file)
        with open(file, "wb") as f:
            f.write(b"RIFF\x00\x00 half a header")
        raise exc("interrupted mid-write")

    monkeypatch.setattr(sf, "write", partial_write)
    with pytest.raises(exc):
        A.save_audio(target, sine(16000), 16000)

    assert len(seen) == 1
    tmp_name = Path(seen[0])
    assert tmp_name.parent == tmp_path and tmp_name != target
    assert tmp_name.name.startswith(".out.wav.tmp-") and tmp_name.suffix == ".wav"
    assert sorted(os.listdir(tmp_path)) == before  # no temp file left
    if pre_existing:
        assert target.read_bytes() == b"old content"
    else:
        assert not target.exists()


def test_save_replaces_existing_file_atomically(tmp_path):
    target = tmp_path / "out.flac"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    x = sine(16000)
    A.save_audio(target, x, 16000)
    np.testing.assert_allclose(decoded(target), x, atol=1 / 32768)
    assert (target.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["out.flac"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.integers(1, 2).flatmap(
        lambda c: arrays(
            np.float32,
            st.tuples(st.just(c), st.integers(1, 64)),
            elements=st.floats(-1, 1, width=32, allow_subnormal=False),
        )
    )
)
def test_property_float_wav_round_trip_is_exact(tmp_path, data):
    if float(np.abs(data).max()) < A.SILENCE_THRESHOLD:  # float64, as load_audio compares
        data = data.copy()
        data[0, 0] = 0.5
    path = A.save_audio(tmp_path / "p.wav", data, 8000, subtype="FLOAT")
    y, sr = A.load_audio(path)
    assert sr == 8000
    np.testing.assert_array_equal(y.numpy(), data)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "ext, subtype, nch",
    [("wav", "PCM_16", 1), ("wav", "FLOAT", 2), ("wav", "PCM_24", 2), ("aiff", "PCM_16", 1), ("aiff", "FLOAT", 2)],
)
def test_a_truncated_file_is_refused_with_promised_and_found_frames(tmp_path, ext, subtype, nch):
    """libsndfile silently shortens a file whose header promises more frames than it holds."""
    path = tmp_path / f"cut.{ext}"
    sf.write(str(path), sine(16000, seconds=1.0, channels=nch).T, 16000, subtype=subtype)
    found = sf.info(str(_truncate(path))).frames
    assert 0 < found < 16000  # what used to be loaded without a word
    for kwargs in ({}, {"duration": 0.1}, {"offset": 0.05, "duration": 0.1, "target_sr": 8000}):
        with pytest.raises(ValueError, match=rf"cut\.{ext}.*truncated.*promises 16000 frames.*holds {found}"):
            A.load_audio(path, **kwargs)


def test_a_truncated_flac_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(str(path), sine(16000, seconds=1.0).T, 16000, subtype="PCM_16")
    _truncate(path)
    with pytest.raises(ValueError, match=r"cut\.flac.*(truncated|corrupt)"):
        A.load_audio(path)


def test_intact_wav_with_chunks_after_the_data_still_loads(tmp_path):
    path = tmp_path / "tail.wav"
    x = sine(16000)
    sf.write(str(path), x.T, 16000, subtype="FLOAT")
    data = bytearray(path.read_bytes() + b"LIST" + (5).to_bytes(4, "little") + b"INFOx\x00")
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(A.load_audio(path)[0].numpy(), x)


def test_samples_that_overflow_when_processed_are_refused(tmp_path):
    """A float WAV may hold huge finite samples; resampling them must not hand back NaN/inf."""
    path = tmp_path / "huge.wav"
    x = np.where(np.arange(16000) % 2 == 0, 3e38, -3e38).astype(np.float32)
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"huge\.wav.*resampl.*non-finite"):
        A.load_audio(path, target_sr=32000)
    wide = tmp_path / "wide.wav"
    sf.write(str(wide), np.full(100, 1e300), 16000, subtype="DOUBLE")
    with pytest.raises(ValueError, match=r"wide\.wav.*non-finite.*float32"):
        A.load_audio(wide)
    with pytest.raises(ValueError, match="resampl.*non-finite"):
        A.load_audio(x[None], sr=16000, target_sr=32000)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"offset": "2"}, "offset"), ({"offset": True}, "offset"), ({"duration": "2"}, "duration"),
        ({"duration": [1.0]}, "duration"), ({"normalize": "-1"}, "normalize"), ({"loudness_db": "x"}, "loudness_db"),
        ({"target_sr": "16000"}, "target_sr"),
    ],
)
def test_numeric_arguments_of_the_wrong_type_are_named(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=rf"{name} must be .*got"):
        A.load_audio(sine(16000), sr=16000, **kwargs)
