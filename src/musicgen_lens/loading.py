"""Hugging Face MusicGen (and MusicGen-melody) checkpoints <-> our state dict.

This is the only module that knows Hugging Face parameter names. Each decoder weight has one
rule (copy, split into heads, transpose) that runs in both directions, so a model trained or
edited here can be written back as a Hugging Face checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from musicgen_lens.config import MusicGenConfig

if TYPE_CHECKING:
    from musicgen_lens.chroma import ChromaExtractor
    from musicgen_lens.model import HookedMusicGen

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Rule:
    hf: str
    ours: str
    to_ours: Callable[[torch.Tensor], torch.Tensor]
    to_hf: Callable[[torch.Tensor], torch.Tensor]


def _copy(x: torch.Tensor) -> torch.Tensor:
    return x


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.T.contiguous()


def _rules(cfg: MusicGenConfig) -> list[_Rule]:
    """Every decoder parameter: HF name (relative to Musicgen[Melody]ForCausalLM) -> our name.

    Linear weights are stored [out, in] on both sides (ours expose TransformerLens-layout views).
    A melody decoder has the same names without the cross-attention (`encoder_attn*`).
    """
    rules: list[_Rule] = []
    dec = "model.decoder"
    for k in range(cfg.n_codebooks):
        rules.append(_Rule(f"{dec}.embed_tokens.{k}.weight", f"embed.W_E.{k}", _copy, _copy))
        rules.append(_Rule(f"lm_heads.{k}.weight", f"unembed.W_U.{k}", _transpose, _transpose))
    for layer in range(cfg.n_layers):
        hf_l, ours_l = f"{dec}.layers.{layer}", f"blocks.{layer}"
        attns = (("self_attn", "attn"),) if cfg.is_melody else (("self_attn", "attn"), ("encoder_attn", "cross_attn"))
        lns = (("self_attn_layer_norm", "ln1"), ("final_layer_norm", "ln2"))
        if not cfg.is_melody:
            lns = lns[:1] + (("encoder_attn_layer_norm", "ln_cross"),) + lns[1:]
        for hf_attn, our_attn in attns:
            for proj, w in (("q", "W_Q_T"), ("k", "W_K_T"), ("v", "W_V_T"), ("out", "W_O_T")):
                rules.append(_Rule(f"{hf_l}.{hf_attn}.{proj}_proj.weight", f"{ours_l}.{our_attn}.{w}", _copy, _copy))
        for hf_ln, our_ln in lns:
            rules.append(_Rule(f"{hf_l}.{hf_ln}.weight", f"{ours_l}.{our_ln}.w", _copy, _copy))
            rules.append(_Rule(f"{hf_l}.{hf_ln}.bias", f"{ours_l}.{our_ln}.b", _copy, _copy))
        rules.append(_Rule(f"{hf_l}.fc1.weight", f"{ours_l}.mlp.W_in_T", _copy, _copy))
        rules.append(_Rule(f"{hf_l}.fc2.weight", f"{ours_l}.mlp.W_out_T", _copy, _copy))
    rules.append(_Rule(f"{dec}.layer_norm.weight", "ln_final.w", _copy, _copy))
    rules.append(_Rule(f"{dec}.layer_norm.bias", "ln_final.b", _copy, _copy))
    return rules


_PROJ_RULES = (
    ("enc_to_dec_proj.weight", "cond_proj.W_cond", _transpose),
    ("enc_to_dec_proj.bias", "cond_proj.b_cond", _copy),
)
# MusicgenMelodyForConditionalGeneration.audio_enc_to_dec_proj: chroma -> d_model
_CHROMA_PROJ_RULES = (
    ("audio_enc_to_dec_proj.weight", "chroma_proj.W_chroma", _transpose),
    ("audio_enc_to_dec_proj.bias", "chroma_proj.b_chroma", _copy),
)


def _proj_rules(cfg: MusicGenConfig) -> tuple[tuple[str, str, Callable[[torch.Tensor], torch.Tensor]], ...]:
    """The projections outside the decoder that this config has (text, and the melody's chroma)."""
    rules = _PROJ_RULES if cfg.has_cond_proj else ()
    if cfg.is_melody and cfg.has_chroma_proj:
        rules = rules + _CHROMA_PROJ_RULES
    return rules


def _stacked(name: str) -> tuple[str, int] | None:
    """'embed.W_E.3' -> ('embed.W_E', 3): per-codebook tables are slices of one parameter."""
    base, _, idx = name.rpartition(".")
    return (base, int(idx)) if idx.isdigit() and base.endswith(("W_E", "W_U")) else None


def convert_hf_decoder(
    hf_decoder_sd: dict[str, torch.Tensor],
    cfg: MusicGenConfig,
    hf_proj_sd: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """`Musicgen[Melody]ForCausalLM.state_dict()` (+ `enc_to_dec_proj`, `audio_enc_to_dec_proj`) -> our state dict.

    Raises with the full list of missing and unexpected Hugging Face keys, so that a checkpoint
    of another architecture fails loudly instead of loading half its weights.
    """
    rules = _rules(cfg)
    expected = {r.hf for r in rules}
    present = set(hf_decoder_sd)
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    proj_sd = hf_proj_sd or {}
    missing += [k for k, _, _ in _proj_rules(cfg) if k not in proj_sd]
    if missing or unexpected:
        raise KeyError(
            "The Hugging Face decoder does not match MusicGenConfig "
            f"(n_layers={cfg.n_layers}, n_codebooks={cfg.n_codebooks}, is_melody={cfg.is_melody}).\n"
            f"  missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
        )
    out: dict[str, torch.Tensor] = {}
    tables: dict[str, list[torch.Tensor]] = {}
    for r in rules:
        value = r.to_ours(hf_decoder_sd[r.hf])
        stacked = _stacked(r.ours)
        if stacked:
            tables.setdefault(stacked[0], []).append(value)
        else:
            out[r.ours] = value
    for name, parts in tables.items():
        out[name] = torch.stack(parts)
    for hf_name, ours, fn in _proj_rules(cfg):
        out[ours] = fn(proj_sd[hf_name])
    return out


def to_hf_decoder(our_sd: dict[str, torch.Tensor], cfg: MusicGenConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Our state dict -> (`Musicgen[Melody]ForCausalLM` state dict, projections' state dict:
    `enc_to_dec_proj.*` and, for melody models, `audio_enc_to_dec_proj.*`)."""
    dec: dict[str, torch.Tensor] = {}
    for r in _rules(cfg):
        stacked = _stacked(r.ours)
        value = our_sd[stacked[0]][stacked[1]] if stacked else our_sd[r.ours]
        dec[r.hf] = r.to_hf(value)
    proj = {hf_name: fn(our_sd[ours]) for hf_name, ours, fn in _proj_rules(cfg)}
    return dec, proj


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def from_hf(
    hf_model: Any,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    chroma_extractor: "ChromaExtractor | None" = None,
    **cfg_overrides: Any,
) -> "HookedMusicGen":
    """Build a HookedMusicGen from an in-memory `MusicgenForConditionalGeneration` or
    `MusicgenMelodyForConditionalGeneration`.

    The text encoder and EnCodec modules are adopted as they are (they are not re-implemented);
    the decoder is converted into our layout. `chroma_extractor` (melody models) sets how melody
    audio becomes chroma; default: Hugging Face's feature-extractor defaults at the model's rate.
    """
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    from musicgen_lens.codec import Codec
    from musicgen_lens.conditioning import TextEncoder
    from musicgen_lens.model import HookedMusicGen

    if not isinstance(hf_model, (MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration)):
        raise TypeError(
            "from_hf expects a transformers MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration, "
            f"got {type(hf_model).__name__}"
        )
    dtype = dtype or next(hf_model.decoder.parameters()).dtype
    device = device or default_device()
    cfg = MusicGenConfig.from_hf(hf_model.config, dtype=dtype, device=str(device), **cfg_overrides)
    proj_sd: dict[str, torch.Tensor] = {}
    for module_name in {hf.split(".")[0] for hf, _, _ in _proj_rules(cfg)}:
        proj_sd.update(getattr(hf_model, module_name).state_dict(prefix=f"{module_name}."))
    state = convert_hf_decoder(hf_model.decoder.state_dict(), cfg, proj_sd)
    text_encoder = TextEncoder(hf_model.text_encoder)
    codec = Codec(hf_model.audio_encoder, audio_channels=cfg.audio_channels, n_codebooks=cfg.n_codebooks)
    model = HookedMusicGen(cfg, text_encoder=text_encoder, codec=codec, tokenizer=tokenizer, init=False, chroma_extractor=chroma_extractor)
    model.load_state_dict(state, strict=False)
    _check_loaded(model, state)
    return model.to(device=device, dtype=dtype).eval()


def _check_loaded(model: "HookedMusicGen", state: dict[str, torch.Tensor]) -> None:
    own = {k for k in model.state_dict() if not k.startswith(("text_encoder.", "codec."))}
    missing = sorted(own - set(state))
    if missing:
        raise KeyError(f"These decoder parameters were not filled from the checkpoint: {missing}")


class _SpecialTokenCheck(logging.Filter):
    """MusicGen's pad/BOS id is codebook_size, one past the codes (the delay pattern's pad);
    transformers' generic config check calls it out of vocabulary on every MusicGen load."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_token_id must be `None` or an integer within the vocabulary" not in record.getMessage()


@contextlib.contextmanager
def _quiet_special_token_check() -> Iterator[None]:
    check_logger, quiet = logging.getLogger("transformers.configuration_utils"), _SpecialTokenCheck()
    check_logger.addFilter(quiet)
    try:
        yield
    finally:
        check_logger.removeFilter(quiet)


def from_pretrained(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **cfg_overrides: Any,
) -> "HookedMusicGen":
    """Load the embedded toy model, a local `save_pretrained` directory or a hub name; melody
    checkpoints are recognised by their config's model_type.

    How `name_or_path` is read, in this order:

    - `None` or the string "toy": the embedded toy model (`musicgen_lens.toy`), always; "toy" is
      reserved, so a folder called `toy` in the working directory is loaded as "./toy" (or by an
      absolute path, or as `Path("toy")`).
    - a path: a `pathlib.Path` / `os.PathLike`, or a string that starts with "/", ".", "~", holds
      a backslash, more than one "/", or names an existing directory. It must be a directory
      with a `config.json`, else FileNotFoundError ("no such directory: ...") or
      NotADirectoryError; it is never sent to the hub.
    - otherwise a hub id, "name" or "namespace/name" (e.g. "facebook/musicgen-small",
      "facebook/musicgen-melody"), downloaded or read from the Hugging Face cache.

    What was loaded is logged (logging.INFO, logger `musicgen_lens.loading`) and recorded:
    `model.cfg.model_name` is the name as given ("toy", the path, the hub id) and `model.source`
    the resolved location (the embedded or local directory as an absolute path, or the hub id).
    """
    requested, name_or_path = resolve_name_or_path(name_or_path)
    from transformers import AutoConfig, AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    with _quiet_special_token_check():
        hf_config = AutoConfig.from_pretrained(str(name_or_path))
        is_melody = hf_config.model_type == "musicgen_melody"
        hf_class = MusicgenMelodyForConditionalGeneration if is_melody else MusicgenForConditionalGeneration
        hf_model = hf_class.from_pretrained(str(name_or_path), dtype=dtype or torch.float32)
    chroma_extractor = _chroma_extractor(name_or_path, hf_config) if is_melody else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:  # a checkpoint saved without its tokenizer
        logger.warning("No tokenizer found with %s (%s); pass input_ids to model.condition()", name_or_path, err)
        tokenizer = None
    model = from_hf(hf_model, tokenizer=tokenizer, device=device, dtype=dtype, chroma_extractor=chroma_extractor, **cfg_overrides)
    model.cfg.model_name = requested
    model.source = str(name_or_path)
    return model


def _looks_like_path(name: str) -> bool:
    """A string no hub id can be: hub ids are "name" or "namespace/name" of [A-Za-z0-9._-]."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or (os.sep != "/" and os.sep in name)
        or (os.altsep is not None and os.altsep != "/" and os.altsep in name)
        or name.count("/") > 1
        or os.path.isabs(name)
    )


def resolve_name_or_path(name_or_path: str | os.PathLike | None) -> tuple[str, str]:
    """(the name as given, what to load: an absolute directory or a hub id); see `from_pretrained`.

    Raises FileNotFoundError / NotADirectoryError for a path that is not a checkpoint directory,
    without asking the hub."""
    from pathlib import Path

    from musicgen_lens.toy import TOY_NAME, is_toy_name, toy_model_path

    if is_toy_name(name_or_path):
        resolved = str(toy_model_path())
        if Path(TOY_NAME).is_dir():
            logger.warning(
                "'toy' is the embedded toy model (%s), not the folder %s in the working directory; "
                "to load that folder pass './toy'", resolved, str(Path(TOY_NAME).resolve())
            )
        logger.info("loading the embedded toy model from %s", resolved)
        return TOY_NAME, resolved
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a hub id, a directory path or None (the embedded toy model), got {type(name_or_path).__name__}"
        )
    requested = os.fspath(name_or_path)
    if not isinstance(requested, str):  # bytes paths
        raise TypeError(f"name_or_path must be a str or a str path, got {requested!r}")
    if not requested:
        raise ValueError('name_or_path is empty; expected "toy", a checkpoint directory or a hub id such as "facebook/musicgen-small"')
    is_path = not isinstance(name_or_path, str) or _looks_like_path(requested) or os.path.isdir(requested)
    if not is_path:
        logger.info("loading %r from the Hugging Face hub (or its local cache)", requested)
        return requested, requested
    path = Path(requested).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no such directory: {str(path.absolute())!r} (from {requested!r}); expected a directory written by "
            'save_pretrained, "toy" for the embedded model, or a hub id such as "facebook/musicgen-small"'
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"not a directory: {str(path.absolute())!r} (from {requested!r}); expected the checkpoint directory "
            "written by save_pretrained (holding config.json), not a file in it"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path.absolute())!r} (from {requested!r}) has no config.json; expected a directory written by "
            "save_pretrained (config.json, model.safetensors, tokenizer files)"
        )
    resolved = str(path.resolve())
    logger.info("loading %r from the local directory %s", requested, resolved)
    return requested, resolved


def _chroma_extractor(name_or_path: str | os.PathLike, hf_config: Any) -> "ChromaExtractor":
    """The checkpoint's `preprocessor_config.json` (MusicgenMelodyFeatureExtractor settings), read
    as plain JSON because HF's extractor class needs torchaudio; defaults when it is absent."""
    import json

    from transformers.utils import cached_file

    from musicgen_lens.chroma import ChromaExtractor

    try:
        path = cached_file(str(name_or_path), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        path = None
    if path is None:
        logger.warning("No preprocessor_config.json with %s; using the default chroma settings", name_or_path)
        return ChromaExtractor(sample_rate=hf_config.audio_encoder.sampling_rate, n_chroma=hf_config.num_chroma)
    with open(path) as f:
        return ChromaExtractor.from_dict(json.load(f))
