"""The toy model's training pieces: RVQ, codec and decoder trainers (tiny sizes, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicgen_lens.training.codec import codec_config, export_codec, train_codec
from musicgen_lens.training.losses import MultiResolutionMelLoss
from musicgen_lens.training.rvq import EMACodebook, ResidualVQ, kmeans


def blobs(n_per: int = 50, k: int = 4, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 10
    x = centres.repeat_interleave(n_per, 0) + 0.1 * torch.randn(k * n_per, d, generator=g)
    return x, centres


def test_kmeans_finds_separated_clusters():
    x, centres = blobs()
    found = kmeans(x, 4, iters=20, generator=torch.Generator().manual_seed(3))
    # every true centre has a found centre within the noise level
    assert torch.cdist(centres, found).min(1).values.max() < 0.5


def test_ema_update_moves_codes_to_assigned_means_and_replaces_dead_codes():
    book = EMACodebook(codebook_size=3, dim=2, decay=0.5, dead_threshold=0.2)
    book.init_from(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [9.0, 1.0]])
    for _ in range(30):
        n_dead = book.update(x, book.encode(x), torch.Generator().manual_seed(0))
    # used codes converge to the mean of what they are assigned: each point is reproduced
    assert torch.allclose(book.decode(book.encode(x)), x, atol=1e-2)
    # the code at [0, 10] was never used: declared dead and re-seeded from the batch
    assert all(torch.cdist(row[None], x).min() < 1e-2 for row in book.embed)
    assert n_dead >= 0


def test_residual_levels_reduce_error_and_gradient_is_straight_through():
    torch.manual_seed(0)
    latent = torch.randn(4, 8, 50, requires_grad=True)
    rvq = ResidualVQ(n_q=3, codebook_size=16, dim=8).train()
    for _ in range(5):
        rvq(latent.detach())
    rvq.eval()
    errors = []
    x = latent.detach().permute(0, 2, 1).reshape(-1, 8)
    residual = x.clone()
    for level in rvq.levels:
        residual = residual - level.decode(level.encode(residual))
        errors.append(residual.pow(2).mean().item())
    assert errors[0] < x.pow(2).mean().item() and errors[2] < errors[1] < errors[0]
    out = rvq(latent)
    out.quantized.sum().backward()
    assert torch.equal(latent.grad, torch.ones_like(latent))
    assert out.codes.shape == (4, 3, 50) and out.codes.dtype == torch.long


def test_export_into_encodec_gives_the_same_codes():
    from transformers import EncodecModel

    cfg = codec_config(sampling_rate=8000, num_filters=4, hidden_size=8, codebook_size=16, upsampling_ratios=[4, 4])
    model = EncodecModel(cfg).eval()
    rvq = ResidualVQ(cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim).train()
    audio = torch.randn(2, 1, 800)
    with torch.no_grad():
        latent = model.encoder(audio)
        rvq(latent)
        rvq.eval()
        ours = rvq(latent).codes
        rvq.export_to(model)
        theirs = model.encode(audio).audio_codes[0]
    assert cfg.num_quantizers == 4
    assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="quantizers"):
        ResidualVQ(2, 16, 8).export_to(model)


def test_mel_loss_is_zero_only_for_identical_audio():
    loss = MultiResolutionMelLoss(8000, n_ffts=(128, 256))
    x = torch.randn(2, 1, 4000)
    assert loss(x, x).item() == 0.0
    y = x.clone().requires_grad_(True)
    value = loss(y + 0.1 * torch.randn_like(x), x)
    value.backward()
    assert value.item() > 0 and torch.isfinite(y.grad).all()


def test_mel_loss_resolves_harmonics_that_band_noise_imitates():
    """A long window with many bands tells a harmonic tone from noise filtered to the same band
    energy; this is why the band count grows with the window."""
    sr, n = 16000, 16000
    t = torch.arange(n) / sr
    tone = sum(torch.sin(2 * torch.pi * 440 * h * t) / h for h in range(1, 9))[None, None]
    spec = torch.fft.rfft(tone[0, 0])
    noise = torch.fft.irfft(spec.abs() * torch.exp(2j * torch.pi * torch.rand(spec.shape, generator=torch.Generator().manual_seed(0))), n)
    smooth = torch.nn.functional.avg_pool1d(torch.fft.rfft(noise).abs()[None, None], 201, 1, 100)[0, 0]  # smear the partials
    smeared = torch.fft.irfft(smooth * torch.exp(2j * torch.pi * torch.rand(spec.shape, generator=torch.Generator().manual_seed(1))), n)
    smeared = (smeared * tone.std() / smeared.std())[None, None]
    coarse = MultiResolutionMelLoss(sr, n_ffts=(2048,), n_mels=(16,))(smeared, tone).item()
    fine = MultiResolutionMelLoss(sr, n_ffts=(2048,), n_mels=(320,))(smeared, tone).item()
    assert fine > 1.5 * coarse, (fine, coarse)


def test_discriminator_scores_and_feature_matching():
    from musicgen_lens.training.discriminator import MultiResolutionDiscriminator, discriminator_loss, generator_losses

    torch.manual_seed(0)
    disc = MultiResolutionDiscriminator(n_ffts=(64, 128), channels=4, n_layers=2)
    real = torch.sin(torch.arange(2 * 4000, dtype=torch.float32) * 0.05).reshape(2, 1, 4000) * 0.5
    fake = real + 0.05 * torch.randn_like(real)
    outs = disc(real)
    assert len(outs) == 2 and all(score.shape[:2] == (2, 1) and len(feats) == 3 for score, feats in outs)
    adv, fm = generator_losses(disc(real), disc(real))
    assert fm.item() == 0.0 and adv.item() > 0
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = discriminator_loss(disc(real), disc(fake))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    # it learns to tell the clean sine from the noisy one, so the generator's losses are high
    assert loss.item() < 0.5 * first
    adv_fake, fm_fake = generator_losses(disc(real), disc(fake))
    assert adv_fake.item() > 0.5 and fm_fake.item() > 0


def test_mel_loss_needs_one_band_count_per_window():
    with pytest.raises(ValueError, match="one band count per STFT size"):
        MultiResolutionMelLoss(8000, n_ffts=(128, 256), n_mels=(16,))


TINY_CODEC = dict(sampling_rate=8000, num_filters=4, hidden_size=8, codebook_size=16, upsampling_ratios=[4, 4])


def test_codec_training_resumes_exactly_and_exports_a_stock_model(tmp_path):
    from transformers import EncodecModel

    audio = (np.sin(np.arange(20 * 4000) * 0.05).reshape(20, 4000) * 10000).astype(np.int16)
    kw = dict(batch_size=4, segment_s=0.2, save_every=2, progress=False, config=codec_config(**TINY_CODEC))
    train_codec(tmp_path / "straight", audio, steps=6, **kw)
    train_codec(tmp_path / "resumed", audio, steps=4, **kw)  # "interrupted" at step 4 ...
    out = train_codec(tmp_path / "resumed", audio, steps=6, **kw)  # ... and resumed
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-6), key
    loaded = EncodecModel.from_pretrained(out)
    assert loaded.quantizer.layers[0].codebook.embed.abs().sum() > 0  # real codebooks, not zeros
    assert export_codec(tmp_path / "straight", codec_config(**TINY_CODEC)).exists()
    with pytest.raises(FileNotFoundError, match="directory of a codec run"):
        export_codec(tmp_path / "never_trained", codec_config(**TINY_CODEC))
    with pytest.raises(FileNotFoundError, match="directory of a codec run"):
        train_codec(tmp_path / "ft", audio, steps=2, init_from=tmp_path / "never_trained", decoder_only=True, **kw)


def test_import_from_is_the_inverse_of_export_to():
    from transformers import EncodecModel

    cfg = codec_config(**TINY_CODEC)
    model = EncodecModel(cfg).eval()
    trained = ResidualVQ(cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim).train()
    latent = torch.randn(2, cfg.codebook_dim, 40)
    trained(latent)
    trained.export_to(model)
    fresh = ResidualVQ(cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim).eval()
    fresh.import_from(model)
    assert all(bool(level.inited) for level in fresh.levels)
    assert torch.equal(fresh(latent).codes, trained.eval()(latent).codes)
    with pytest.raises(ValueError, match="codebook shape"):
        ResidualVQ(cfg.num_quantizers, 8, cfg.codebook_dim).import_from(model)


def test_adversarial_decoder_fine_tune_from_a_saved_codec_keeps_codes_and_resumes_exactly(tmp_path):
    from transformers import EncodecModel

    audio = (np.sin(np.arange(20 * 4000) * 0.05).reshape(20, 4000) * 10000).astype(np.int16)
    kw = dict(batch_size=4, segment_s=0.2, save_every=2, progress=False, config=codec_config(**TINY_CODEC))
    base = train_codec(tmp_path / "base", audio, steps=4, **kw)  # a saved EncodecModel directory
    ft = dict(init_from=base, decoder_only=True, adv_weight=0.5, fm_weight=1.0, **kw)
    straight = train_codec(tmp_path / "straight", audio, steps=6, **ft)
    train_codec(tmp_path / "resumed", audio, steps=4, **ft)  # "interrupted" at step 4 ...
    train_codec(tmp_path / "resumed", audio, steps=6, **ft)  # ... and resumed
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=False)
    for part in ("model", "disc"):
        for key in a[part]:
            assert torch.allclose(a[part][key], b[part][key], atol=1e-6), (part, key)
    log = [json.loads(line) for line in open(tmp_path / "straight" / "log.jsonl")]
    assert [e["step"] for e in log] == list(range(1, 7)) and all({"disc", "adv", "fm"} <= e.keys() for e in log)
    before, after = EncodecModel.from_pretrained(base).eval(), EncodecModel.from_pretrained(straight).eval()
    x = torch.from_numpy(audio[:3, :1600]).float()[:, None] / 32768
    with torch.no_grad():
        assert torch.equal(before.encode(x).audio_codes, after.encode(x).audio_codes)  # codes unchanged
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert changed and all(k.startswith("decoder.") for k in changed)


def test_codec_training_reduces_the_reconstruction_loss(tmp_path):
    audio = (np.sin(np.arange(10 * 4000) * 0.07).reshape(10, 4000) * 10000).astype(np.int16)
    train_codec(tmp_path, audio, steps=40, batch_size=4, segment_s=0.2, save_every=40, progress=False, lr=3e-3, config=codec_config(**TINY_CODEC))
    import json

    mel = [json.loads(line)["mel"] for line in open(tmp_path / "log.jsonl")]
    assert np.mean(mel[-5:]) < 0.9 * np.mean(mel[:5])


# ---------------------------------------------------------------------------- decoder training


def _tiny_lm(tmp_path):
    from transformers import EncodecModel

    from musicgen_lens import HookedMusicGen
    from musicgen_lens.tiny import build_tokenizer
    from musicgen_lens.training.lm import build_hf_model, world_words

    EncodecModel(codec_config(**TINY_CODEC)).save_pretrained(tmp_path / "encodec")
    tok = build_tokenizer(tuple(world_words(["classical trumpet melody at 96 BPM in D major"])))
    hf = build_hf_model(tmp_path / "encodec", tok.get_vocab(), n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=64, d_text=16, text_layers=1)
    return HookedMusicGen.from_hf(hf, tokenizer=tok, device="cpu"), hf, tok


ROWS = [dict(text="classical trumpet melody at 96 BPM in D major", style="classical", instrument="trumpet", tempo_bpm="96"),
        dict(text="rock violin melody at 140 BPM in A minor pentatonic", style="rock", instrument="violin", tempo_bpm="140")]


def test_world_words_cover_every_description():
    from musicgen_lens.data.synth import make_dataset
    from musicgen_lens.tiny import build_tokenizer
    from musicgen_lens.training.lm import world_words

    texts = [c.text for c in make_dataset(200, accompaniments=(None, "tabla"))]
    tok = build_tokenizer(tuple(world_words(texts)))
    unk = tok.convert_tokens_to_ids("<unk>")
    assert all(unk not in tok(t)["input_ids"] for t in texts)


def test_prompt_variants_and_null_rows():
    from musicgen_lens.training.lm import prompt_variant

    rng = np.random.default_rng(0)
    seen = [prompt_variant(ROWS[0], rng) for _ in range(2000)]
    assert 0.07 < np.mean([s is None for s in seen]) < 0.13  # ~10% text dropout for CFG
    assert ROWS[0]["text"] in seen and "classical trumpet melody" in seen


def test_condition_batch_nulls_dropped_rows(tmp_path):
    from musicgen_lens.training.lm import condition_batch

    model, _, _ = _tiny_lm(tmp_path)
    cond = condition_batch(model, ["classical trumpet melody", None])
    assert cond.is_null.tolist() == [False, True]
    assert cond.states[1].abs().sum() == 0
    codes = torch.randint(0, 16, (2, 4, 10))
    # a dropped row is exactly the unconditional branch generation uses
    from musicgen_lens.generation import apply_delay_pattern

    seq = apply_delay_pattern(codes, model.cfg.pad_token_id)
    with torch.no_grad():
        a = model(seq, cond)[1]
        b = model(seq[1:], model.null_condition(1))[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_lm_training_resumes_exactly_learns_and_exports(tmp_path):
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.training.lm import export, train_lm, validation_loss

    codes = torch.randint(0, 16, (8, 4, 12), generator=torch.Generator().manual_seed(0)).to(torch.int16)
    codes[:, :, 1::2] = codes[:, :, ::2]  # learnable structure: every frame repeats
    rows = [ROWS[i % 2] for i in range(8)]
    straight, _, _ = _tiny_lm(tmp_path / "a")
    before = validation_loss(straight, codes, rows, n=8)
    train_lm(tmp_path / "a", straight, codes, rows, steps=60, batch_size=4, lr=1e-2, save_every=30, progress=False)
    resumed, hf, tok = _tiny_lm(tmp_path / "b")
    train_lm(tmp_path / "b", resumed, codes, rows, steps=30, batch_size=4, lr=1e-2, save_every=30, progress=False)
    resumed, hf, tok = _tiny_lm(tmp_path / "b")  # a fresh process would rebuild the model
    train_lm(tmp_path / "b", resumed, codes, rows, steps=60, batch_size=4, lr=1e-2, save_every=30, progress=False)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if not name.startswith("codec."):  # the (untrained, frozen) codecs are separate random inits
            assert torch.allclose(p, q, atol=1e-5), name
    assert validation_loss(straight, codes, rows, n=8) < before - 0.3
    out = export(resumed, hf, tok, tmp_path / "export", card="# card\n", half=False)
    loaded = HookedMusicGen.from_pretrained(out)
    seq = torch.randint(0, 16, (1, 4, 10))
    with torch.no_grad():
        assert torch.allclose(loaded(seq, ["classical trumpet melody"]), resumed(seq, ["classical trumpet melody"]), atol=1e-5)
    assert (out / "README.md").read_text() == "# card\n"


def test_load_split_reads_rows_without_audio(tmp_path):
    from musicgen_lens.training.data import build_dataset, load_split

    build_dataset(tmp_path, 6, num_workers=1, progress=False)
    audio, rows = load_split(tmp_path, "train")
    none, same_rows = load_split(tmp_path, "train", with_audio=False)
    assert none is None and same_rows == rows
    assert audio.dtype == np.int16 and audio.shape == (len(rows), 64000)
    with pytest.raises(FileNotFoundError, match="build_dataset"):
        load_split(tmp_path / "missing", "train")


def test_checkpoint_restores_modules_optimisers_and_generators_in_place(tmp_path):
    from musicgen_lens.training.checkpoint import load_checkpoint, save_checkpoint

    def objects(seed):
        torch.manual_seed(seed)
        net = torch.nn.Linear(3, 2)
        return dict(net=net, opt=torch.optim.AdamW(net.parameters()), gen=torch.Generator().manual_seed(seed), rng=np.random.default_rng(seed))

    a = objects(0)
    a["net"](torch.randn(4, 3)).sum().backward()
    a["opt"].step()
    torch.rand(3, generator=a["gen"]), a["rng"].random()
    assert load_checkpoint(tmp_path / "state.pt", **a) == 0  # nothing saved yet: untouched
    save_checkpoint(tmp_path / "state.pt", 7, **a)
    b = objects(1)
    assert load_checkpoint(tmp_path / "state.pt", **b) == 7
    assert torch.equal(a["net"].weight, b["net"].weight)
    assert torch.equal(a["opt"].state_dict()["state"][0]["exp_avg"], b["opt"].state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3, generator=a["gen"]), torch.rand(3, generator=b["gen"]))
    assert a["rng"].random() == b["rng"].random()


def test_a_resumed_log_drops_the_steps_it_will_redo(tmp_path):
    from musicgen_lens.training.checkpoint import open_log

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(dict(step=s, loss=1.0)) + "\n" for s in range(1, 16)))  # killed at 15, saved at 10
    with open_log(path, 10) as log:
        log.write(json.dumps(dict(step=11, loss=0.5)) + "\n")
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == list(range(1, 12))
    with open_log(tmp_path / "new.jsonl", 0) as log:
        log.write("{}\n")
    assert (tmp_path / "new.jsonl").read_text() == "{}\n"


def test_a_continued_run_carries_its_checkpoints_history_into_the_model_card(tmp_path):
    import argparse
    import importlib.util
    from pathlib import Path

    from musicgen_lens.toy import TOY_MODEL

    spec = importlib.util.spec_from_file_location("train_lm_script", Path(__file__).parents[1] / "training" / "train_lm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    first = script.earlier_card_line(str(TOY_MODEL), "- training: ")
    assert first is not None and "steps" in first
    assert script.earlier_card_line(str(tmp_path), "- training: ") is None  # no card there
    assert script.earlier_card_line(None, "- training: ") is None

    class Cfg:
        n_layers, d_model, n_heads, d_mlp, n_codebooks, d_vocab, sample_rate, frame_rate = 4, 128, 4, 512, 4, 256, 16000, 100.0

    class Model:
        cfg = Cfg()

    shipped_data = script.earlier_card_line(str(TOY_MODEL), "- data: ")
    shipped_clips = int(__import__("re").search(r"\((\d+) clips of 4 s", shipped_data).group(1))
    stats = dict(steps=600, batch_size=16, minutes=47.0, final_train_loss=3.6, val_loss_text=3.8, val_loss_no_text=3.83, train_clips=shipped_clips)
    args = argparse.Namespace(init_from=str(TOY_MODEL), codec="runs/none", final_codec=None, lr=5e-4, seed=1)
    card = script.model_card(stats, Model(), args)
    training = next(line for line in card.splitlines() if line.startswith("- training: "))
    assert training.startswith("- training: first ") and first.rstrip(";").removeprefix("first ") in training
    assert training.count("first ") == 1  # a card already continued once is not "first first ..."
    assert training.rstrip(";").endswith("then continued from that checkpoint for 600 steps, batch 16, AdamW lr 0.0005, seed 1, 47 min on "
                                         f"{__import__('platform').machine()} CPU")
    codec = next(line for line in card.splitlines() if line.startswith("- codec training: "))
    assert codec.split(";")[0] == "- codec training: " + script.earlier_card_line(str(TOY_MODEL), "- codec training: ").split(";")[0]

    # the same clips as the checkpoint: its data line (and any earlier stages it names) is kept
    data = next(line for line in card.splitlines() if line.startswith("- data: "))
    assert data.split(", train split")[1] == shipped_data.split(", train split")[1]
    # a stage on a larger rendering of the world says so in the data and the training lines,
    # and the checkpoint's history of clip counts goes on
    more = shipped_clips + 1000
    bigger = script.model_card({**stats, "train_clips": more, "world_items": 99999}, Model(), args)
    data = next(line for line in bigger.splitlines() if line.startswith("- data: "))
    assert "n = 99999" in data and f"({more} clips of 4 s; earlier stages: " in data and data.endswith(f"{shipped_clips} clips)")
    training = next(line for line in bigger.splitlines() if line.startswith("- training: "))
    assert training.rstrip(";").endswith(f" CPU, on {more} clips")

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("- data: `make_dataset(n)`, train split (3230 clips of 4 s)\n- training: first 10 steps;\n- codec training: 5 steps\n")
    args2 = argparse.Namespace(**{**vars(args), "init_from": str(plain)})
    same = script.model_card({**stats, "train_clips": 3230}, Model(), args2)
    assert "earlier stages" not in same  # the same clips throughout: nothing to say
    grown = script.model_card({**stats, "train_clips": 9669, "world_items": 12000}, Model(), args2)
    assert "train split (9669 clips of 4 s; earlier stages: 3230 clips)" in grown


class _Payload:
    """A pickle whose loading would run code: what a crafted `state.pt` carries."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_a_checkpoint_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    from musicgen_lens.training.checkpoint import load_checkpoint

    _Payload.marker = str(tmp_path / "pwned")
    torch.save({"step": 3, "net": _Payload()}, tmp_path / "state.pt")
    net = torch.nn.Linear(3, 2)
    before = net.weight.detach().clone()
    with pytest.raises(ValueError, match=r"state\.pt.*(refus|not a plain)"):
        load_checkpoint(tmp_path / "state.pt", net=net)
    assert not (tmp_path / "pwned").exists()
    assert torch.equal(net.weight, before)


def test_checkpoint_round_trips_every_numpy_bit_generator(tmp_path):
    """MT19937 keeps its state in a numpy array, which a weights-only load refuses unless it is
    stored as plain data; every bit generator must still resume exactly."""
    from musicgen_lens.training.checkpoint import load_checkpoint, save_checkpoint

    kinds = (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64)
    a = {k.__name__: np.random.Generator(k(0)) for k in kinds}
    for g in a.values():
        g.random(5), g.integers(0, 10, 3)
    save_checkpoint(tmp_path / "state.pt", 2, **a)
    b = {k.__name__: np.random.Generator(k(1)) for k in kinds}
    assert load_checkpoint(tmp_path / "state.pt", **b) == 2
    for name in a:
        assert a[name].random() == b[name].random(), name
        assert a[name].bit_generator.state["bit_generator"] == b[name].bit_generator.state["bit_generator"]


def test_checkpoint_load_names_what_is_missing_and_mismatched(tmp_path):
    from musicgen_lens.training.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "state.pt", 1, gen=torch.Generator().manual_seed(0))
    with pytest.raises(KeyError, match=r"'net'.*state\.pt.*has: gen"):
        load_checkpoint(tmp_path / "state.pt", net=torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"'gen'.*torch.Generator's state.*numpy"):
        load_checkpoint(tmp_path / "state.pt", gen=np.random.default_rng(0))


def test_the_lm_scripts_codes_cache_is_read_weights_only(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_lm_script", Path(__file__).parents[1] / "training" / "train_lm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    codes = torch.randint(0, 256, (2, 4, 10), dtype=torch.int16)
    torch.save(codes, tmp_path / "codes.pt")
    assert torch.equal(script.cached_codes(tmp_path / "codes.pt", None, "unused", "train"), codes)
    _Payload.marker = str(tmp_path / "pwned")
    torch.save(_Payload(), tmp_path / "bad.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        script.cached_codes(tmp_path / "bad.pt", None, "unused", "train")
    assert not (tmp_path / "pwned").exists()
    torch.save(torch.zeros(3), tmp_path / "floats.pt")
    with pytest.raises(ValueError, match=r"floats\.pt.*not a codes cache"):
        script.cached_codes(tmp_path / "floats.pt", None, "unused", "train")


def test_train_lm_refuses_a_data_folder_rendered_larger_than_n_clips(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from musicgen_lens.training.data import build_dataset

    spec = importlib.util.spec_from_file_location("train_lm_script", Path(__file__).parents[1] / "training" / "train_lm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    build_dataset(tmp_path / "world", 16, num_workers=1, progress=False)  # both splits present
    with pytest.raises(SystemExit):
        script.main(["--data", str(tmp_path / "world"), "--n-clips", "12", "--run", str(tmp_path / "run")])
    assert "lists 16 clips, not the --n-clips 12" in capsys.readouterr().err

