"""`musicgen-lens generate/steer` on the embedded toy model: it runs, and bad arguments fail
before the (long) model load and generation, with messages that say what was expected."""

from __future__ import annotations

import re

import pytest
import soundfile as sf
import torch

from musicgen_lens import HookedMusicGen, cli


@pytest.fixture(scope="module")
def toy():
    return HookedMusicGen.from_pretrained("toy", device="cpu")


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(HookedMusicGen, "from_pretrained", refuse)


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code not in (0, None)
    return str(exc.value.code) + capsys.readouterr().err


def test_default_model_is_the_embedded_toy_and_help_names_the_hub_model(capsys):
    assert cli.build_parser().parse_args(["generate", "x"]).model == "toy"
    assert cli.build_parser().parse_args(["steer", "x", "--vector", "v.safetensors"]).model == "toy"
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    assert "facebook/musicgen-small" in " ".join(capsys.readouterr().out.split())


def test_generate_writes_audio_with_the_embedded_model(tmp_path, capsys, toy):
    out = tmp_path / "new" / "deeper" / "a.wav"  # missing directories are created
    assert cli.main(["generate", "a calm piano", "--duration", "0.05", "--seed", "0", "--out", str(out)]) == 0
    info = sf.info(str(out))
    assert info.samplerate == toy.sample_rate and info.frames > 0
    assert str(out) in capsys.readouterr().out


def test_steer_writes_the_steered_and_the_original_audio(tmp_path, toy, monkeypatch):
    from musicgen_lens.steering import SteeringVector

    # the real load is covered above; this test reuses the loaded model to stay fast
    monkeypatch.setattr(HookedMusicGen, "from_pretrained", lambda name, device=None: toy)

    vector = tmp_path / "v.safetensors"
    SteeringVector(torch.randn(toy.cfg.d_model), site="resid_post", layer=0, model_hash=toy.cfg.hash()).save(vector)
    out, original = tmp_path / "s.wav", tmp_path / "o.flac"
    argv = ["steer", "rock", "--vector", str(vector), "--duration", "0.05", "--seed", "1", "--out", str(out), "--original", str(original)]
    assert cli.main(argv) == 0
    assert sf.info(str(out)).frames > 0 and sf.info(str(original)).format == "FLAC"


@pytest.mark.parametrize(
    "out, expected",
    [
        ("a.xyz", r"\.xyz.*\.wav"),
        ("noextension", r"noextension.*extension.*\.wav"),
        ("file.txt/a.wav", r"file\.txt.*not a directory"),
        (".", r"is a directory"),
    ],
)
def test_a_bad_destination_fails_before_loading(tmp_path, capsys, no_load, out, expected):
    (tmp_path / "file.txt").write_text("")
    target = str(tmp_path / out)


    message = _error(capsys, ["generate", "x", "--duration", "0.05", "--out", target])
    assert re.search(expected, message), message
    message = _error(capsys, ["steer", "x", "--vector", str(tmp_path / "file.txt"), "--out", str(tmp_path / "ok.wav"), "--original", target])
    assert re.search(expected, message), message


@pytest.mark.parametrize("option", ["--audio-prompt", "--melody"])
def test_a_missing_input_file_fails_before_loading(tmp_path, capsys, no_load, option):
    message = _error(capsys, ["generate", "x", option, str(tmp_path / "nope.wav"), "--out", str(tmp_path / "a.wav")])
    assert option in message and "nope.wav" in message and "no such file" in message
    message = _error(capsys, ["steer", "x", "--vector", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "a.wav")])
    assert "--vector" in message and "nope.safetensors" in message


def test_a_missing_model_directory_says_so(tmp_path, capsys):
    message = _error(capsys, ["generate", "x", "--model", "/nonexistent", "--out", str(tmp_path / "a.wav")])
    assert "no such directory: '/nonexistent'" in message and "Repo id" not in message
    assert not (tmp_path / "a.wav").exists()


def test_a_hub_model_that_cannot_be_fetched_offline_gets_a_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _error(capsys, ["generate", "x", "--model", "nobody-xyz/not-a-musicgen", "--out", str(tmp_path / "a.wav")])
    assert "nobody-xyz/not-a-musicgen" in message and "no network? try --model toy" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize(
    "args",
    [
        ["--duration", "nan"], ["--duration", "0"], ["--duration", "-1"], ["--duration", "inf"], ["--duration", "two"],
        ["--top-k", "2.5"], ["--top-k", "-1"], ["--seed", "1.5"], ["--seed", "-3"], ["--seed", str(2**64)],
        ["--top-p", "1.5"], ["--top-p", "nan"], ["--temperature", "0"], ["--guidance-scale", "nan"], ["--guidance-scale", "-1"],
        ["--prompt-offset", "-1"], ["--prompt-duration", "0"],
    ],
)
@pytest.mark.parametrize("command", ["generate", "steer"])
def test_numeric_arguments_are_checked_at_the_boundary(capsys, command, args):
    if command == "steer" and args[0] in ("--top-p", "--temperature"):
        pytest.skip("generate-only option")
    extra = ["--vector", "v.safetensors"] if command == "steer" else []
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args([command, "x", *extra, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and repr(args[1]) in err and "expected" in err


@pytest.mark.parametrize("args", [["--every", "0"], ["--every", "1.5"], ["--layer", "-1"], ["--alpha", "nan"], ["--start", "-1"], ["--end", "inf"]])
def test_steering_arguments_are_checked_at_the_boundary(capsys, args):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["steer", "x", "--vector", "v.safetensors", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "expected" in err


def test_numbers_are_parsed_to_their_types():
    args = cli.build_parser().parse_args(["generate", "x", "--duration", "2", "--top-k", "3", "--seed", "0", "--top-p", "1"])
    assert (args.duration, args.top_k, args.seed, args.top_p) == (2.0, 3, 0, 1.0)
    assert type(args.duration) is float and type(args.top_k) is int and type(args.seed) is int
