"""Sparse autoencoders (SAEs) on MusicGen activations: store batches, training, loading, features.

Store side. `store_batches(store, hook)` yields shuffled [batch, d] float tensors of the per-frame
rows of one hook array of an `ActivationStore` (``pooling="frames"`` gives one row per frame)
without loading the array: the rows are cut into contiguous chunks (`chunk_rows`); each epoch
visits the chunks in a seeded random order, reads `buffer_chunks` of them at a time from the
memory-mapped ``.npy`` (a contiguous read each), shuffles the rows of that buffer and yields
batches. Memory is about `buffer_chunks·chunk_rows` rows; the order depends only on the seed.

Training: which library. SAELens (6.54) requires transformer-lens < 4 and cannot share an
environment with our transformer-lens 4.3. EleutherAI's `eai-sparsify` 1.3.3 installs beside our
pins (torch 2.13 untouched; it adds natsort, schedulefree, simple-parsing and docstring-parser,
and needs accelerate and datasets, hence pyarrow and pandas). Its `Trainer` drives a Hugging
Face model over a token dataset, which is not how our activations arrive, but its
`SparseCoder` (TopK encoder, AuxK loss for dead latents, unit-norm decoder) is a module we can
train on store batches. So `train_sae` has two back ends:

- ``backend="torch"`` (default, no extra dependency): a small TopK SAE (Gao et al. 2024, the
  architecture sparsify trains) in plain torch: z = TopK(ReLU((x − b_dec) W_enc + b_enc)),
  x̂ = z W_dec + b_dec, loss = ‖x − x̂‖² / ‖x − mean(x)‖² (the fraction of variance unexplained),
  Adam, decoder rows renormalised to unit norm after each step (and the gradient component
  parallel to them removed), b_dec started at the mean of the first batch, W_enc at W_decᵀ.
- ``backend="sparsify"`` (the ``sae`` extra: ``pip install musicgen-lens[sae]``): the same loop
  around `sparsify.SparseCoder` and its loss (fvu + AuxK); the result is converted to our `SAE`.
  It is not in the dev extra (datasets/pyarrow are much heavier than this library), so CI tests
  the torch back end and the sparsify test is skipped without it.

Loading needs neither library: `SAE.load(path)` reads our own files and SAELens's and
sparsify's layouts:

- a directory with ``cfg.json`` + ``sae_weights.safetensors`` (SAELens; also what `SAE.save`
  writes): tensors W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
  (+ ``threshold`` for JumpReLU); cfg d_in, d_sae, architecture ("standard" | "topk" |
  "jumprelu"), k (or activation_fn_kwargs.k), apply_b_dec_to_input;
- a directory with ``cfg.json`` + ``sae.safetensors`` (sparsify): encoder.weight [d_sae, d_in],
  encoder.bias, W_dec, b_dec; cfg k, num_latents, d_in;
- a single ``.safetensors`` file with W_enc, b_enc, W_dec, b_dec (+ a scalar tensor ``k`` or
  metadata "k").

Features: `feature_activations` / `top_activating` (the items and frames that activate a feature
most), and `SAE.feature_vector(i)` / `SteeringVector.from_sae(sae, i, ...)`: the feature's unit
decoder direction as a SteeringVector (method="sae") to steer with (mode "add" /
"norm_relative") or to ablate (``Intervention(vec, mode="ablate")``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from musicgen_lens._atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen
    from musicgen_lens.steering import SteeringVector

__all__ = ["SAE", "store_batches", "train_sae", "explained_variance", "feature_activations", "top_activating", "sparsify_available"]

_BACKENDS = ("torch", "sparsify")


def sparsify_available() -> bool:
    try:
        import sparsify  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- store batches
def _rows_array(data: Any, hook: str | None) -> Any:
    """A [rows, ...] array-like: store[hook] (memory-mapped), or an array / tensor as given."""
    if isinstance(data, (str, os.PathLike)):
        from musicgen_lens.activations import ActivationStore

        data = ActivationStore.open(data)
    if hasattr(data, "hooks") and hasattr(data, "labels"):
        if hook is None:
            raise ValueError(f"hook= is required to read an ActivationStore (it has {list(data.hooks)})")
        return data[hook]
    if hook is not None and isinstance(data, dict):
        return data[hook]
    return data


def store_batches(
    data: Any,
    hook: str | None = None,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    chunk_rows: int = 1024,
    buffer_chunks: int = 16,
    epochs: int | None = 1,
    drop_last: bool = False,
    head: int | None = None,
    rows: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Shuffled [batch_size, d] batches of rows of an ActivationStore hook (module docstring).

    data      an ActivationStore (or its path) with hook=, or any [rows, ..., d] array (an np.memmap too).
    head      for per-head arrays [rows, heads, d]: that head's rows; otherwise trailing axes are flattened.
    rows      (start, stop): only these rows (a train / validation split).
    epochs    passes over the rows (None: forever); each pass has its own seeded order.
    """
    arr = _rows_array(data, hook)
    n_total = int(arr.shape[0])
    lo, hi = (0, n_total) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= lo < hi <= n_total:
        raise ValueError(f"rows must satisfy 0 <= start < stop <= {n_total}, got {rows}")
    if batch_size < 1 or chunk_rows < 1 or buffer_chunks < 1:
        raise ValueError("batch_size, chunk_rows and buffer_chunks must be >= 1")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
    if head is not None and (len(arr.shape) != 3 or not 0 <= head < arr.shape[1]):
        raise ValueError(f"head={head} needs a per-head array [rows, heads, d], got shape {tuple(arr.shape)}")
    starts = np.arange(lo, hi, chunk_rows)
    epoch = 0
    carry: np.ndarray | None = None

    def rowsof(a: int, b: int) -> np.ndarray:
        block = arr[a:b] if head is None else arr[a:b, head]
        block = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        return block.reshape(block.shape[0], -1)

    while epochs is None or epoch < epochs:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(starts))
        for i in range(0, len(order), buffer_chunks):
            parts = [rowsof(int(starts[j]), int(min(starts[j] + chunk_rows, hi))) for j in order[i : i + buffer_chunks]]
            buf = np.concatenate(parts)
            buf = buf[rng.permutation(buf.shape[0])]
            if carry is not None and carry.shape[0]:
                buf = np.concatenate([carry, buf])
            n_full = buf.shape[0] // batch_size * batch_size
            for a in range(0, n_full, batch_size):
                yield torch.from_numpy(np.ascontiguousarray(buf[a : a + batch_size])).to(device=device, dtype=dtype)
            carry = buf[n_full:]
        epoch += 1
    if carry is not None and carry.shape[0] and not drop_last:
        yield torch.from_numpy(np.ascontiguousarray(carry)).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------- the SAE
class SAE(nn.Module):
    """A sparse autoencoder: z = act((x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc), x̂ = z W_dec + b_dec.

    act: TopK (k set: ReLU, then the k largest kept), JumpReLU (threshold set), else ReLU.
    `metadata` (JSON) carries provenance: hook, site, layer, model_hash, weights_hash, trainer.
    """

    def __init__(self, d_in: int, d_sae: int, k: int | None = None, *, apply_b_dec_to_input: bool = True,
                 threshold: torch.Tensor | None = None, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if d_in < 1 or d_sae < 1:
            raise ValueError(f"d_in and d_sae must be >= 1, got {d_in}, {d_sae}")
        if k is not None and not 1 <= int(k) <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
        self.d_in, self.d_sae, self.k = int(d_in), int(d_sae), (None if k is None else int(k))
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.threshold = None if threshold is None else nn.Parameter(torch.as_tensor(threshold, dtype=dtype), requires_grad=False)
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def architecture(self) -> str:
        return "topk" if self.k is not None else ("jumprelu" if self.threshold is not None else "standard")

    def __repr__(self) -> str:
        return f"SAE(d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture!r}, k={self.k})"

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense feature activations [..., d_sae] (at most k non-zero per row for TopK)."""
        pre = self.pre_acts(x)
        if self.k is not None:
            acts = torch.relu(pre)
            vals, idx = acts.topk(self.k, dim=-1)
            return torch.zeros_like(acts).scatter(-1, idx, vals)
        if self.threshold is not None:
            return pre * (pre > self.threshold)
        return torch.relu(pre)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ features
    def feature_vector(self, feature: int, *, site: str | None = None, layer: int | None = None, model: "HookedMusicGen | None" = None,
                       **kwargs: Any) -> "SteeringVector":
        """`SteeringVector.from_sae(self, feature)`, site / layer defaulting to `metadata`."""
        from musicgen_lens.steering import SteeringVector

        site = site if site is not None else self.metadata.get("site")
        layer = layer if layer is not None else self.metadata.get("layer")
        if site is None or layer is None:
            raise ValueError("pass site= and layer= (this SAE's metadata does not say where it was trained)")
        return SteeringVector.from_sae(self, feature, site=site, layer=layer, model=model, **kwargs)

    # ------------------------------------------------------------------ save / load
    def cfg(self) -> dict[str, Any]:
        cfg = {"d_in": self.d_in, "d_sae": self.d_sae, "architecture": self.architecture, "apply_b_dec_to_input": self.apply_b_dec_to_input,
               "format": "musicgen_lens.SAE/1", "metadata": self.metadata}
        if self.k is not None:
            cfg.update(k=self.k, activation_fn="topk", activation_fn_kwargs={"k": self.k})
        if "hook" in self.metadata:
            cfg["hook_name"] = self.metadata["hook"]
        return cfg

    def save(self, path: str | os.PathLike) -> Path:
        """A directory in SAELens's layout: cfg.json + sae_weights.safetensors (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).detach().contiguous().cpu() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold.detach().contiguous().cpu()
        with atomic_path(path / "sae_weights.safetensors") as tmp:
            save_file(tensors, str(tmp))
        atomic_write_text(path / "cfg.json", json.dumps(self.cfg(), indent=2, sort_keys=True))
        return path

    @classmethod
    def _from_tensors(cls, t: dict[str, torch.Tensor], k: int | None, apply_b_dec: bool, metadata: dict[str, Any]) -> "SAE":
        missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in t]
        if missing:
            raise ValueError(f"SAE weights lack {missing} (found {sorted(t)})")
        W_enc = t["W_enc"]
        d_in, d_sae = W_enc.shape
        if t["W_dec"].shape != (d_sae, d_in) or t["b_enc"].shape != (d_sae,) or t["b_dec"].shape != (d_in,):
            raise ValueError(f"inconsistent SAE shapes: W_enc {tuple(W_enc.shape)}, W_dec {tuple(t['W_dec'].shape)}, "
                             f"b_enc {tuple(t['b_enc'].shape)}, b_dec {tuple(t['b_dec'].shape)}")
        dtype = W_enc.dtype if W_enc.dtype.is_floating_point else torch.float32
        dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        sae = cls(d_in, d_sae, k, apply_b_dec_to_input=apply_b_dec, threshold=t.get("threshold"), metadata=metadata, dtype=dtype)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(t[name].to(dtype))
        return sae

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SAE":
        """Our / SAELens's directory, sparsify's directory, or one .safetensors file (module docstring)."""
        from safetensors import safe_open

        path = Path(path)

        def read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})

        if path.is_dir():
            cfg_file = path / "cfg.json"
            cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
            if (path / "sae_weights.safetensors").exists():  # ours / SAELens
                t, _ = read(path / "sae_weights.safetensors")
                k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
                arch = cfg.get("architecture", "topk" if k is not None else "standard")
                if arch != "topk":
                    k = None
                if arch == "jumprelu" and "threshold" not in t:
                    raise ValueError(f"{path}: a JumpReLU SAE needs a 'threshold' tensor")
                meta = dict(cfg.get("metadata") or {})
                for key in ("hook_name", "model_name", "hook_layer"):
                    if key in cfg and key not in meta:
                        meta[key] = cfg[key]
                meta.setdefault("source", "saelens" if cfg.get("format") != "musicgen_lens.SAE/1" else "musicgen_lens")
                sae = cls._from_tensors(t, k, bool(cfg.get("apply_b_dec_to_input", True)), meta)
            elif (path / "sae.safetensors").exists():  # sparsify
                t, _ = read(path / "sae.safetensors")
                if "encoder.weight" not in t:
                    raise ValueError(f"{path}/sae.safetensors has no encoder.weight (found {sorted(t)})")
                t = {"W_enc": t["encoder.weight"].T.contiguous(), "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
                if cfg.get("activation", "topk") != "topk":
                    raise ValueError(f"{path}: only TopK sparsify coders are supported, got activation={cfg.get('activation')!r}")
                sae = cls._from_tensors(t, int(cfg["k"]), not cfg.get("transcode", False), {"source": "sparsify"})
            else:
                raise FileNotFoundError(f"{path} has neither sae_weights.safetensors (SAELens / ours) nor sae.safetensors (sparsify)")
            return sae
        t, meta = read(path)
        k_t = t.pop("k", None)
        k = int(k_t.item()) if k_t is not None else (int(meta["k"]) if "k" in meta else None)
        extra = json.loads(meta["metadata"]) if "metadata" in meta else {}
        return cls._from_tensors(t, k, meta.get("apply_b_dec_to_input", "true").lower() != "false", {"source": "safetensors", **extra})


# ---------------------------------------------------------------------------- training
def explained_variance(sae: SAE, X: Any, batch_size: int = 8192) -> float:
    """1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the rows of X (an array, a tensor, or batches)."""
    batches = [torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)] if not isinstance(X, Iterator) else X
    sse, n, s1, s2 = 0.0, 0, None, 0.0
    with torch.no_grad():
        for big in batches:
            for i in range(0, big.shape[0], batch_size):
                x = big[i : i + batch_size].to(sae.W_enc.dtype).reshape(-1, sae.d_in)
                sse += float(((x - sae(x)) ** 2).sum())
                s1 = x.double().sum(0) if s1 is None else s1 + x.double().sum(0)
                s2 += float((x.double() ** 2).sum())
                n += x.shape[0]
    total = s2 - float((s1**2).sum()) / n
    return 1.0 - sse / total if total > 0 else 0.0


def _batches(data: Any, hook: str | None, batch_size: int, seed: int, kwargs: dict[str, Any]) -> Iterator[torch.Tensor]:
    if callable(data) and not hasattr(data, "shape"):
        while True:  # a factory of iterables of batches, called again at each pass
            yield from data()
    yield from store_batches(data, hook, batch_size=batch_size, seed=seed, epochs=None, **kwargs)


def _train_sae(
    data: Any,
    *,
    d_sae: int,
    k: int,
    hook: str | None = None,
    steps: int = 2000,
    batch_size: int = 1024,
    lr: float | None = None,
    seed: int = 0,
    backend: str = "torch",
    aux_k: int | None = None,
    dead_steps: int = 200,
    progress: bool = False,
    metadata: dict[str, Any] | None = None,
    callback: Callable[[int, float], None] | None = None,
    **batch_kwargs: Any,
) -> SAE:
    """Train a TopK SAE on rows of `data` (an ActivationStore with hook=, its path, or an array /
    tensor [n, d]; batches come from `store_batches`, seeded) for `steps` Adam steps.

    lr defaults to 2e-4 / sqrt(d_sae / 16384) (Gao et al.'s scaling, as sparsify). AuxK: latents
    that fired in none of the last `dead_steps` steps are dead; the torch back end adds
    (1/32)·‖e − ê_dead‖² / ‖e‖² with ê_dead the reconstruction of the residual e from the
    `aux_k` (default d_in // 2) largest dead latents, as sparsify does. `callback(step, fvu)`
    is called every step. The SAE's metadata records the trainer and its settings. Gradients
    are enabled inside, so it trains under torch.no_grad() too.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "sparsify" and not sparsify_available():
        raise ImportError("backend='sparsify' needs eai-sparsify: pip install 'musicgen-lens[sae]' (or use backend='torch')")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    it = _batches(data, hook, batch_size, seed, batch_kwargs)
    first = next(it)
    d_in = first.shape[-1]
    lr = lr if lr is not None else 2e-4 / math.sqrt(d_sae / 16384)
    aux_k = aux_k if aux_k is not None else max(1, d_in // 2)
    meta = {"trainer": backend, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "k": k, **(metadata or {})}
    if hook is not None:
        meta.setdefault("hook", hook)
        from musicgen_lens.hooks import parse_hook_name

        try:
            s, layer = parse_hook_name(hook)
            meta.setdefault("site", s.name)
            meta.setdefault("layer", layer)
        except ValueError:
            pass
    from tqdm.auto import tqdm

    def batches() -> Iterator[torch.Tensor]:
        yield first
        yield from it

    if backend == "sparsify":
        return _train_sparsify(batches(), d_in, d_sae, k, steps, lr, seed, meta, progress, callback)

    sae = SAE(d_in, d_sae, k, metadata=meta)
    with torch.no_grad():
        W = torch.randn(d_sae, d_in, generator=gen)
        sae.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(first.float().mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    for step, x in zip(tqdm(range(steps), disable=not progress, desc="sae"), batches()):
        x = x.float()
        pre = torch.relu(sae.pre_acts(x))
        vals, idx = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        recon = sae.decode(z)
        e = x - recon
        total = ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12)
        fvu = (e**2).sum() / total
        loss = fvu
        fired = torch.zeros(d_sae, dtype=torch.bool)
        fired[idx.flatten()] = True
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        dead = since_fired >= dead_steps
        n_dead = int(dead.sum())
        if n_dead:
            kk = min(aux_k, n_dead)
            aux_pre = torch.where(dead[None], pre, torch.zeros_like(pre))
            av, ai = aux_pre.topk(kk, dim=-1)
            e_hat = torch.zeros_like(pre).scatter(-1, ai, av) @ sae.W_dec
            aux = ((e.detach() - e_hat) ** 2).sum() / (e.detach() ** 2).sum().clamp_min(1e-12)
            loss = loss + aux / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows on the unit sphere: drop the radial gradient, then renormalise
            Wd = sae.W_dec
            Wd.grad -= (Wd.grad * Wd).sum(1, keepdim=True) * Wd
        opt.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if callback is not None:
            callback(step, float(fvu))
    return sae.eval()


@functools.wraps(_train_sae)
def train_sae(*args: Any, **kwargs: Any) -> SAE:  # noqa: D103 - the docstring is _train_sae's
    with torch.enable_grad():  # trains inside torch.no_grad() / set_grad_enabled(False) too
        return _train_sae(*args, **kwargs)


def _train_sparsify(batches: Iterable[torch.Tensor], d_in: int, d_sae: int, k: int, steps: int, lr: float, seed: int,
                    meta: dict[str, Any], progress: bool, callback: Callable[[int, float], None] | None) -> SAE:
    from sparsify import SparseCoder, SparseCoderConfig
    from tqdm.auto import tqdm

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # SparseCoder initialises with the global RNG; restore it afterwards
    try:
        coder = SparseCoder(d_in, SparseCoderConfig(k=k, num_latents=d_sae), device="cpu", dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    opt = torch.optim.Adam(coder.parameters(), lr=lr)
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    started = False
    for step, x in zip(tqdm(range(steps), disable=not progress, desc="sae (sparsify)"), batches):
        x = x.float()
        if not started:
            with torch.no_grad():
                coder.b_dec.copy_(x.mean(0))
            started = True
        dead = since_fired >= 200
        out = coder(x, dead_mask=dead if dead.any() else None)
        loss = out.fvu + out.auxk_loss / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        coder.set_decoder_norm_to_unit_norm()
        fired = torch.zeros(d_sae, dtype=torch.bool)
        fired[out.latent_indices.flatten()] = True
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        if callback is not None:
            callback(step, float(out.fvu))
    t = {"W_enc": coder.encoder.weight.detach().T.contiguous(), "b_enc": coder.encoder.bias.detach(),
         "W_dec": coder.W_dec.detach(), "b_dec": coder.b_dec.detach()}
    return SAE._from_tensors(t, k, True, {**meta, "trainer": "sparsify"}).eval()


# ---------------------------------------------------------------------------- features
def feature_activations(sae: SAE, data: Any, hook: str | None = None, feature: int | None = None, *,
                        batch_size: int = 8192, head: int | None = None) -> np.ndarray:
    """Activations of one feature [rows] (or of all, [rows, d_sae]) over the rows in store order
    (memory-mapped reads of consecutive blocks)."""
    arr = _rows_array(data, hook)
    out = []
    with torch.no_grad():
        for a in range(0, int(arr.shape[0]), batch_size):
            block = arr[a : a + batch_size] if head is None else arr[a : a + batch_size, head]
            x = torch.as_tensor(np.array(block) if not isinstance(block, torch.Tensor) else block).reshape(-1, sae.d_in)
            z = sae.encode(x)
            out.append((z if feature is None else z[:, feature]).numpy())
    return np.concatenate(out)


def top_activating(sae: SAE, store: Any, hook: str, feature: int, n: int = 10, **kwargs: Any) -> list[dict[str, Any]]:
    """The n rows of an ActivationStore where `feature` is largest: dicts with item (index), id,
    row, frame (-1 without per-frame pooling), seconds, activation, labels; largest first."""
    acts = feature_activations(sae, store, hook, feature, **kwargs)
    order = np.argsort(-acts, kind="stable")[:n]
    item_of = np.repeat(np.arange(len(store.items)), [it["rows"] for it in store.items])
    frames = store.frames()
    rate = float(store.meta.get("frame_rate", 0) or 0)
    out = []
    for r in order.tolist():
        item = store.items[int(item_of[r])]
        frame = int(frames[r])
        out.append({"item": int(item_of[r]), "id": item["id"], "row": r, "frame": frame,
                    "seconds": frame / rate if frame >= 0 and rate else None, "activation": float(acts[r]), "labels": item["labels"]})
    return out
