"""Train the toy MusicGen decoder and its small T5 text encoder on the synthetic world's codes.

The model is trained as a `HookedMusicGen` (the decoder we study) that adopts the T5 and the
trained EnCodec modules of a Hugging Face `MusicgenForConditionalGeneration`; `export` converts
the decoder back (`loading.to_hf_decoder`) and `save_pretrained`s the whole checkpoint, so it
loads through the same `from_pretrained` path as `facebook/musicgen-small`.

Text is dropped (null conditioning, as in CFG's unconditional branch) for a fraction of the
batch so classifier-free guidance works, and descriptions are randomly shortened
("classical trumpet melody") so short prompts are in-distribution.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from musicgen_lens.conditioning import Conditioning
from musicgen_lens.generation import apply_delay_pattern
from musicgen_lens.training.checkpoint import load_checkpoint, lr_at, open_log, save_checkpoint

ARCH: dict[str, Any] = dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512, n_ctx=1024, d_text=64, text_layers=2)


def world_words(texts: Sequence[str]) -> list[str]:
    """The tokenizer's vocabulary: every word of the descriptions plus the tiny tokenizer's words."""
    from tokenizers import pre_tokenizers

    from musicgen_lens.tiny import WORDS

    split = pre_tokenizers.Whitespace()
    words = dict.fromkeys(WORDS)
    for t in texts:
        for w, _ in split.pre_tokenize_str(t.lower()):
            words.setdefault(w)
    for bpm in range(60, 181):
        words.setdefault(str(bpm))
    return list(words)


def build_hf_model(encodec_dir: str | os.PathLike, words: Sequence[str], seed: int = 0, **arch: Any) -> Any:
    """A fresh `MusicgenForConditionalGeneration` around the trained EnCodec."""
    from transformers import EncodecModel, MusicgenConfig, MusicgenForConditionalGeneration

    from musicgen_lens.tiny import tiny_hf_config

    encodec = EncodecModel.from_pretrained(encodec_dir)
    ecfg = encodec.config
    arch = {**ARCH, **arch}
    base = tiny_hf_config(
        codebook_size=ecfg.codebook_size, n_codebooks=ecfg.num_quantizers, sampling_rate=ecfg.sampling_rate,
        upsampling_ratios=tuple(ecfg.upsampling_ratios), vocab_size_text=len(words) + 3, **arch,
    )
    base.text_encoder.num_heads = max(1, arch["d_text"] // 16)
    base.text_encoder.d_kv = 16
    base.text_encoder.d_ff = 2 * arch["d_text"]
    base.text_encoder.relative_attention_num_buckets = 16
    base.text_encoder.relative_attention_max_distance = 32
    cfg = MusicgenConfig(text_encoder=base.text_encoder, audio_encoder=ecfg, decoder=base.decoder)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(cfg)
    model.audio_encoder.load_state_dict(encodec.state_dict())
    model.generation_config.pad_token_id = cfg.decoder.pad_token_id
    model.generation_config.decoder_start_token_id = cfg.decoder.bos_token_id
    return model.eval()


@torch.no_grad()
def encode_audio(codec: Any, audio: np.ndarray, batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """int16 `[n, samples]` -> codes `[n, n_codebooks, frames]` with the model's codec."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, len(audio), batch_size), desc="encoding", disable=not progress):
        x = torch.from_numpy(audio[i : i + batch_size]).float()[:, None] / 32768.0
        out.append(codec.encode(x).cpu())
    return torch.cat(out).to(torch.int16)


def prompt_variant(row: dict[str, str], rng: np.random.Generator) -> str | None:
    """A random view of a clip's description; None = no text (trains the CFG null branch)."""
    u = rng.random()
    style, instrument = row["style"], row["instrument"]
    if u < 0.1:
        return None
    if u < 0.5:
        return row["text"]
    if u < 0.75:
        return f"{style} {instrument} melody"
    if u < 0.85:
        return f"{instrument} melody"
    if u < 0.92:
        return f"{style} music"
    return f"{style} {instrument} melody at {float(row['tempo_bpm']):g} bpm"


def condition_batch(model: Any, texts: Sequence[str | None]) -> Conditioning:
    present = [t if t is not None else "" for t in texts]
    cond = model.condition(present)
    keep = torch.tensor([t is not None for t in texts], device=cond.mask.device)
    return Conditioning(cond.states * keep[:, None, None].to(cond.states.dtype), cond.mask & keep[:, None], list(texts))


def train_lm(
    run_dir: str | os.PathLike,
    model: Any,
    codes: torch.Tensor,
    rows: Sequence[dict[str, str]],
    *,
    val_codes: torch.Tensor | None = None,
    val_rows: Sequence[dict[str, str]] | None = None,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    save_every: int = 100,
    eval_every: int = 250,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` (a HookedMusicGen) on `codes` [n, K, frames]; resumable from run_dir/state.pt."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    params = [p for n, p in model.named_parameters() if not n.startswith("codec.")]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("codec."))
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    state_path = run_dir / "state.pt"
    run_state = dict(model=model, opt=opt, gen=gen, rng=rng)
    step = load_checkpoint(state_path, **run_state)
    pad = model.cfg.pad_token_id
    model.train()
    bar = tqdm(total=steps, initial=step, desc="decoder", disable=not progress)
    log = open_log(run_dir / "log.jsonl", step)
    t0 = time.time()
    while step < steps:
        idx = torch.randint(0, codes.shape[0], (batch_size,), generator=gen)
        batch = apply_delay_pattern(codes[idx].long(), pad).to(model.device)
        texts = [prompt_variant(rows[i], rng) for i in idx.tolist()]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=200)
        loss = model(batch, condition_batch(model, texts), return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        entry: dict[str, Any] = dict(step=step, loss=loss.item(), t=time.time() - t0)
        if val_codes is not None and (step % eval_every == 0 or step == steps):
            entry["val_loss"] = validation_loss(model, val_codes, val_rows)
            model.train()
        log.write(json.dumps(entry) + "\n")
        if step % save_every == 0 or step == steps:
            log.flush()
            save_checkpoint(state_path, step, **run_state)
    bar.close()
    log.close()
    model.eval()
    return dict(steps=step)


@torch.no_grad()
def validation_loss(model: Any, codes: torch.Tensor, rows: Sequence[dict[str, str]] | None, n: int = 64, text: bool = True) -> float:
    model.eval()
    batch = apply_delay_pattern(codes[:n].long(), model.cfg.pad_token_id).to(model.device)
    texts = [r["text"] for r in rows[:n]] if (text and rows is not None) else [None] * len(batch)
    losses = [model(batch[i : i + 16], condition_batch(model, texts[i : i + 16]), return_type="loss").item() for i in range(0, len(batch), 16)]
    return float(np.mean(losses))


def export(model: Any, hf_model: Any, tokenizer: Any, out_dir: str | os.PathLike, card: str, half: bool = True) -> Path:
    """Write the trained decoder into `hf_model` and save checkpoint + tokenizer + card."""
    from musicgen_lens.loading import to_hf_decoder

    out_dir = Path(out_dir)
    dec, proj = to_hf_decoder({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, model.cfg)
    hf_model.decoder.load_state_dict(dec)
    if proj:
        hf_model.enc_to_dec_proj.load_state_dict({k.split(".", 1)[1]: v for k, v in proj.items()})
    hf_model = hf_model.cpu().eval()
    if half:  # halves the shipped size; from_pretrained upcasts to float32
        hf_model = hf_model.half()
    hf_model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(card)
    return out_dir
