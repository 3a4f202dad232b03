"""Generation: HF parity, KV cache exactness, sampling, time-aware hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import MusicgenForConditionalGeneration

from musicgen_lens.generation import apply_delay_pattern, delays, filter_logits, revert_delay_pattern, sample_next

from helpers import PROMPTS, assert_cached_steps_equal_full_forward, hf_generate_codes


@pytest.mark.parametrize("name", ["base", "stereo", "relu_odd_heads"])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_greedy_generation_equals_hugging_face(name, guidance_scale, checkpoint_dir, load_model):
    model = load_model(name)
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir(name)).eval()
    ours = model.generate(PROMPTS, max_new_frames=25, do_sample=False, guidance_scale=guidance_scale)
    ref = hf_generate_codes(hf, model, PROMPTS, 25, do_sample=False, guidance_scale=guidance_scale)
    assert ours.shape == (2, model.cfg.n_codebooks, 25)
    assert torch.equal(ours, ref)


def test_delay_pattern_round_trip_and_layout():
    codes = torch.arange(2 * 4 * 5).view(2, 4, 5)
    seq = apply_delay_pattern(codes, pad_id=99)
    assert seq.shape == (2, 4, 5 + 3 + 1)
    assert torch.all(seq[:, :, 0] == 99)  # BOS column
    assert seq[0, 2, 3] == codes[0, 2, 0] and seq[0, 2, 2] == 99  # codebook 2 delayed by 2
    assert torch.equal(revert_delay_pattern(seq), codes)
    stereo = torch.arange(8 * 3).view(1, 8, 3)
    seq = apply_delay_pattern(stereo, pad_id=-5, audio_channels=2)
    assert delays(8, 2) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert seq[0, 3, 2] == stereo[0, 3, 0] and seq[0, 3, 1] == -5
    assert torch.equal(revert_delay_pattern(seq, audio_channels=2), stereo)


def test_cached_steps_equal_full_forward(model):
    assert_cached_steps_equal_full_forward(model, model.condition(PROMPTS), frames=20)


def test_seed_reproducible_and_global_rng_untouched(model):
    state = torch.random.get_rng_state()
    a = model.generate(PROMPTS, max_new_frames=15, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = model.generate(PROMPTS, max_new_frames=15, seed=0)
    c = model.generate(PROMPTS, max_new_frames=15, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_1_is_greedy(model):
    greedy = model.generate(PROMPTS, max_new_frames=12, do_sample=False)
    assert torch.equal(model.generate(PROMPTS, max_new_frames=12, top_k=1, seed=5), greedy)


def test_top_k_and_top_p_restrict_support():
    logits = torch.tensor([[[4.0, 3.0, 2.0, 1.0, 0.0]]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    probs = logits.softmax(-1)[0, 0]  # [0.636, 0.234, 0.086, ...]
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))[0, 0]
    assert kept.tolist() == [True, True, False, False, False]
    assert probs[:2].sum() >= 0.8 > probs[:1].sum()
    kept = torch.isfinite(filter_logits(logits, top_k=3, top_p=0.99))[0, 0]
    assert kept.tolist() == [True, True, True, False, False]


def _draws(logits, n, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=0.0, generator=g) | kw
    return torch.stack([sample_next(logits, **kw) for _ in range(n)])


def test_sampling_follows_the_softmax():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, -3.0]]])  # [batch 1, k 2, vocab 4]
    draws = _draws(logits, 20000, seed=0)[:, 0]  # [n, k]
    for k in range(2):
        freq = torch.bincount(draws[:, k], minlength=4).float() / len(draws)
        assert torch.allclose(freq, logits[0, k].softmax(-1), atol=0.015), (k, freq)
    hot = _draws(logits, 2000, seed=0, temperature=0.25)[:, 0, 0]
    assert (hot == 0).float().mean() > 0.97  # low temperature sharpens towards the argmax


def test_one_seed_couples_draws_of_nearby_distributions():
    """Gumbel-max shares the noise between runs: a small change of the logits changes few draws
    (a counterfactual pair), while the marginal of each run stays its own softmax."""
    logits = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(1)) * 2
    nudged = logits.clone()
    nudged[..., 0] += 0.3
    a, b = _draws(logits, 500, seed=3), _draws(nudged, 500, seed=3)
    same = (a == b).float().mean()
    assert same > 0.9
    moved_to_0 = ((b == 0) & (a != 0)).float().mean()
    assert moved_to_0 > 0 and torch.all((a == b) | (b == 0))  # the only change: draws that now pick the boosted code
    assert (_draws(logits, 500, seed=4) == a).float().mean() < 0.5  # another seed is another draw


def test_sampled_codes_stay_in_top_k(model):
    seen = []

    def record(logits, hook):
        seen.append(logits[:, :, -1].clone())

    codes = model.generate(PROMPTS, max_new_frames=10, top_k=3, guidance_scale=1.0, seed=0, return_delayed=True, fwd_hooks=[("hook_logits", record)])
    for i, logits in enumerate(seen):
        top3 = logits.topk(3, dim=-1).indices
        nxt = codes[..., i + 1]
        generated = nxt != model.cfg.pad_token_id
        assert torch.all((top3 == nxt[..., None]).any(-1) | ~generated)


def test_hook_from_frame_n_leaves_earlier_frames_identical(model):
    n = 12
    base = model.generate(PROMPTS, max_new_frames=30, seed=0)

    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def push(resid, hook):  # (a constant vector would be removed by the LayerNorm's centring)
        late = (hook.ctx.frames >= n).to(resid.dtype)[None, :, None]
        return resid + 20.0 * late * direction

    steered = model.generate(PROMPTS, max_new_frames=30, seed=0, fwd_hooks=[("blocks.1.hook_resid_post", push)])
    assert torch.equal(steered[..., :n], base[..., :n])
    assert not torch.equal(steered[..., n:], base[..., n:])


def test_hook_sees_new_position_and_time(model):
    seen = []
    model.generate(PROMPTS, max_new_frames=6, seed=0, fwd_hooks=[("blocks.0.hook_resid_pre", lambda r, hook: seen.append((hook.ctx.step, hook.ctx.start, r.shape[1], hook.ctx.seconds.tolist())))])
    max_delay = model.ctx.max_delay
    assert seen[0][:3] == (0, 0, 1)  # prefill: the BOS column
    for step, start, pos, seconds in seen[1:]:
        assert pos == 1 and start == step
        assert seconds == pytest.approx([(start - max_delay) / model.frame_rate])
    assert len(seen) == 6 + max_delay


def test_cond_only_hook_leaves_uncond_rows_identical(model):
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))

    def steer_cond(resid, hook):
        rows = hook.ctx.cond_rows.to(resid.dtype)[:, None, None]
        return resid + 10.0 * rows * direction

    def run(fwd):
        acts = []
        hooks = list(fwd) + [("blocks.1.hook_resid_post", lambda r, hook: acts.append(r.clone()))]
        model.generate(PROMPTS, max_new_frames=10, seed=0, guidance_scale=3.0, fwd_hooks=hooks)
        return acts

    base, steered = run([]), run([("blocks.0.hook_resid_post", steer_cond)])
    # Within a step the unconditional rows (2, 3 of the CFG batch) are untouched. Across steps
    # both branches read the same sampled codes, so only the first step is comparable.
    assert base[0].shape[0] == 4
    assert torch.equal(base[0][2:], steered[0][2:])
    assert not torch.allclose(base[0][:2], steered[0][:2])
    # In a teacher-forced forward over a [cond; null] batch, every position of the null rows is untouched.
    cond = model.condition(PROMPTS)
    both = type(cond).cat([cond, cond.null_like()])
    codes = torch.randint(0, model.cfg.d_vocab, (4, model.cfg.n_codebooks, 9), generator=torch.Generator().manual_seed(0))
    _, plain = model.run_with_cache(codes, both, names_filter="blocks.1.hook_resid_post")
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", steer_cond)]):
        _, hooked = model.run_with_cache(codes, both, names_filter="blocks.1.hook_resid_post")
    assert torch.equal(plain["blocks.1.hook_resid_post"][2:], hooked["blocks.1.hook_resid_post"][2:])
    assert not torch.allclose(plain["blocks.1.hook_resid_post"][:2], hooked["blocks.1.hook_resid_post"][:2])


def test_audio_prompt_codes_are_kept_verbatim(model, checkpoint_dir):
    prompt = torch.randint(0, model.cfg.d_vocab, (2, model.cfg.n_codebooks, 7), generator=torch.Generator().manual_seed(0))
    out = model.generate(PROMPTS, audio_prompt_codes=prompt, max_new_frames=9, do_sample=False)
    assert out.shape == (2, model.cfg.n_codebooks, 16)
    assert torch.equal(out[..., :7], prompt)
    # and the continuation is Hugging Face's (teacher-forced prompt through the same path)
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base")).eval()
    captured = []
    original = hf.audio_encoder.decode
    hf.audio_encoder.decode = lambda codes, *a, **k: (captured.append(codes[0]), original(codes, *a, **k))[1]
    bos = torch.full((2 * model.cfg.n_codebooks, 1), model.cfg.bos_token_id)
    hf.generate(**model.tokenize(PROMPTS), decoder_input_ids=torch.cat([bos, prompt.reshape(-1, 7)], 1), max_new_tokens=9 + 3, do_sample=False, guidance_scale=3.0)
    hf.audio_encoder.decode = original
    assert torch.equal(out, captured[0])


def test_hooks_are_removed_when_generate_raises(model):
    def boom(resid, hook):
        if hook.ctx.step == 3:
            raise RuntimeError("hook failed at step 3")
        return resid

    with pytest.raises(RuntimeError, match="step 3"):
        model.generate(PROMPTS, max_new_frames=10, fwd_hooks=[("blocks.0.hook_resid_post", boom)])
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    assert not model.ctx.generating


def test_unconditional_generation(model):
    codes = model.generate(batch_size=3, max_new_frames=5, seed=0)
    assert codes.shape == (3, model.cfg.n_codebooks, 5)
    assert codes.max() < model.cfg.d_vocab


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"duration": 0.0}, "positive number of seconds"),
        ({"duration": -1.0}, "positive number of seconds"),
        ({"duration": 100.0}, r"exceed what the model supports: 252 frames = 5.04 s"),
        ({"max_new_frames": 10, "duration": 1.0}, "exactly one of"),
        ({"max_new_frames": 5, "top_p": 1.5}, r"top_p must be in \[0, 1\]"),
        ({"max_new_frames": 5, "top_k": -1}, "top_k must be >= 0"),
        ({"max_new_frames": 5, "temperature": 0.0}, "temperature must be a positive"),
        ({"max_new_frames": 5, "audio_prompt_codes": torch.zeros(1, 4, 3, dtype=torch.long)}, r"batch=2"),
    ],
)
def test_bad_generation_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.generate(PROMPTS, **kwargs)


def test_bad_texts_and_batch(model):
    with pytest.raises(ValueError, match="texts is empty"):
        model.generate([], max_new_frames=3)
    with pytest.raises(ValueError, match="batch_size=3 but the conditioning has batch 2"):
        model.generate(PROMPTS, max_new_frames=3, batch_size=3)
    with pytest.raises(ValueError, match="texts or cond, not both"):
        model.generate(PROMPTS, cond=model.condition(PROMPTS), max_new_frames=3)


def test_waveform_prompt_continuation_matches_hugging_face(model, checkpoint_dir):
    sr = model.sample_rate
    t = torch.arange(int(0.3 * sr)) / sr
    audio = torch.stack([torch.sin(2 * torch.pi * 220 * t), 0.5 * torch.sin(2 * torch.pi * 330 * t)])[:, None, :]
    ours = model.generate(PROMPTS, audio_prompt=audio, audio_prompt_sr=sr, max_new_frames=8, do_sample=False)
    prompt_codes = model.encode(audio)
    assert torch.equal(ours[..., : prompt_codes.shape[-1]], prompt_codes)
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base")).eval()
    captured = []
    original = hf.audio_encoder.decode
    hf.audio_encoder.decode = lambda codes, *a, **k: (captured.append(codes[0]), original(codes, *a, **k))[1]
    hf.generate(**model.tokenize(PROMPTS), input_values=audio, max_new_tokens=8 + 3, do_sample=False, guidance_scale=3.0)
    hf.audio_encoder.decode = original
    assert torch.equal(ours, captured[0])
    # offset/duration cut the prompt before encoding
    cut = model.generate(PROMPTS, audio_prompt=audio, audio_prompt_sr=sr, prompt_offset=0.1, prompt_duration=0.1, max_new_frames=2, do_sample=False)
    assert torch.equal(cut[..., :5], model.encode(audio[..., int(0.1 * sr) : int(0.2 * sr)]))


def test_cli_generate_writes_audio(checkpoint_dir, tmp_path):
    import soundfile as sf

    from musicgen_lens.cli import main

    out = tmp_path / "x.wav"
    assert main(["generate", "rock", "--model", checkpoint_dir("base"), "--duration", "0.2", "--out", str(out), "--seed", "0", "--device", "cpu"]) == 0
    info = sf.info(str(out))
    assert info.samplerate == 8000 and info.frames == 10 * 160  # 10 frames x hop 160


# ---------------------------------------------------------------------------- hardening


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"duration": "2"}, TypeError, "duration must be a number"),
        ({"max_new_frames": 3.5}, TypeError, "max_new_frames must be an int"),
        ({"max_new_frames": 3, "top_k": 2.5}, TypeError, "top_k must be an int"),
        ({"max_new_frames": 3, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"max_new_frames": 3, "seed": "0"}, TypeError, "seed must be an int"),
        ({"max_new_frames": 3, "guidance_scale": -1.0}, ValueError, "guidance_scale must be a finite number >= 0"),
        ({"max_new_frames": 3, "do_sample": 1}, TypeError, "do_sample must be True or False"),
        ({"max_new_frames": 3, "seed": [1, 2, 3]}, ValueError, "3 per-row seeds but the batch has 2"),
    ],
)
def test_bad_arguments_get_clear_errors(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        model.generate(PROMPTS, progress=False, **kwargs)


def test_numpy_integer_seeds_are_accepted(model):
    a = model.generate(PROMPTS, max_new_frames=3, seed=np.int64(4), progress=False)
    b = model.generate(PROMPTS, max_new_frames=3, seed=4, progress=False)
    assert torch.equal(a, b)


def test_a_row_is_reproduced_alone_whatever_its_batch(model):
    """Row i of a batch with seed s draws the same noise as a batch of one with seed s + i."""
    texts = [PROMPTS[0]] * 4
    batch = model.generate(texts, max_new_frames=12, seed=7, progress=False)
    for i in range(4):
        alone = model.generate(texts[:1], max_new_frames=12, seed=7 + i, progress=False)
        assert torch.equal(batch[i : i + 1], alone), i
    listed = model.generate(texts[:2], max_new_frames=12, seed=[9, 7], progress=False)
    assert torch.equal(listed[1:], batch[:1])


def test_non_finite_logits_raise_with_the_step(model):
    def poison(logits, hook):
        if hook.ctx.step == 2:
            return logits * float("nan")

    with pytest.raises(FloatingPointError, match=r"generation step 2 .*hook_logits"):
        model.generate(PROMPTS, max_new_frames=6, seed=0, progress=False, fwd_hooks=[("hook_logits", poison)])


def test_audio_prompt_arrays_need_their_sample_rate(model):
    audio = torch.zeros(1, int(0.2 * model.sample_rate))
    with pytest.raises(ValueError, match="audio_prompt_sr="):
        model.generate(PROMPTS, audio_prompt=audio, max_new_frames=2, progress=False)
    with pytest.raises(ValueError, match="without audio_prompt"):
        model.generate(PROMPTS, audio_prompt_sr=16000, max_new_frames=2, progress=False)
    # an array at another rate is resampled, not read as the model's rate
    twice = torch.sin(torch.arange(int(0.4 * model.sample_rate)) * 0.05)[None]
    at_2x = model.generate(PROMPTS[:1], audio_prompt=twice, audio_prompt_sr=2 * model.sample_rate, max_new_frames=1, do_sample=False, progress=False)
    at_1x = model.generate(PROMPTS[:1], audio_prompt=twice, audio_prompt_sr=model.sample_rate, max_new_frames=1, do_sample=False, progress=False)
    assert at_2x.shape[-1] < at_1x.shape[-1]


def test_a_prompt_longer_than_the_context_is_named_in_seconds(model):
    limit = model.pattern.max_frames(model.cfg.n_ctx)
    codes = torch.zeros(2, model.cfg.n_codebooks, limit + 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"the audio prompt is \d+ frames \([\d.]+ s\) but the model holds at most"):
        model.generate(PROMPTS, audio_prompt_codes=codes, max_new_frames=1, progress=False)
