"""A trainable residual vector quantiser that exports into Hugging Face's `EncodecModel`.

`EncodecModel` can encode and decode but not learn its codebooks (they are zero buffers and the
quantiser is a plain nearest-neighbour search). `ResidualVQ` is the training-time twin with
EnCodec/SoundStream's recipe: k-means initialisation on the first batch, codebooks updated by
exponential moving averages (not gradients), dead codes replaced by random current latents, a
straight-through estimator for the encoder and a commitment loss. `export_to(encodec)` writes
the learned vectors into the stock model, whose argmax quantiser then picks the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


def kmeans(x: Float[Tensor, "n d"], k: int, iters: int = 10, generator: torch.Generator | None = None) -> Float[Tensor, "k d"]:
    """Lloyd's k-means from k-means++ seeds (random seeds often put two centres in one cluster);
    empty clusters keep their previous centre."""
    n = x.shape[0]
    first = int(torch.randint(0, n, (1,), generator=generator))
    centres = [x[first]]
    d2 = (x - x[first]).pow(2).sum(-1)
    for _ in range(1, k):
        # fewer distinct points than codes: duplicates are fine, dead-code replacement fixes them
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        pick = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        centres.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).pow(2).sum(-1))
    centres = torch.stack(centres).clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(-1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


class EMACodebook(nn.Module):
    """One level: `embed` [codebook_size, dim] learned by EMA of the latents assigned to each code."""

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 2.0):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.dead_threshold = decay, eps, dead_threshold
        self.register_buffer("inited", torch.zeros((), dtype=torch.bool))
        self.register_buffer("embed", torch.zeros(codebook_size, dim))
        self.register_buffer("embed_avg", torch.zeros(codebook_size, dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def encode(self, x: Float[Tensor, "n d"]) -> Int[Tensor, "n"]:
        # Same arithmetic as EncodecEuclideanCodebook.quantize, so exported codes agree.
        embed = self.embed.t()
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices

    def decode(self, idx: Int[Tensor, "..."]) -> Float[Tensor, "... d"]:
        return nn.functional.embedding(idx, self.embed)

    @torch.no_grad()
    def init_from(self, x: Float[Tensor, "n d"], generator: torch.Generator | None = None) -> None:
        self.embed.copy_(kmeans(x, self.codebook_size, generator=generator))
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.inited.fill_(True)

    @torch.no_grad()
    def update(self, x: Float[Tensor, "n d"], idx: Int[Tensor, "n"], generator: torch.Generator | None = None) -> int:
        """One EMA step; returns how many dead codes were replaced."""
        onehot = nn.functional.one_hot(idx, self.codebook_size).to(x.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes finite.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, x.shape[0], (n_dead,), generator=generator, device="cpu").to(x.device)
            self.embed[dead] = x[pick]
            self.embed_avg[dead] = x[pick]
            self.cluster_size[dead] = 1.0
        return n_dead


@dataclass
class RVQOutput:
    quantized: Float[Tensor, "batch dim frames"]  # straight-through: gradients reach the encoder
    codes: Int[Tensor, "batch n_q frames"]
    commit_loss: Tensor
    dead_codes: int


class ResidualVQ(nn.Module):
    """`n_q` EMA codebooks applied to successive residuals, on `[batch, dim, frames]` latents."""

    def __init__(self, n_q: int, codebook_size: int, dim: int, decay: float = 0.99, dead_threshold: float = 2.0, seed: int = 0):
        super().__init__()
        self.levels = nn.ModuleList(EMACodebook(codebook_size, dim, decay, dead_threshold=dead_threshold) for _ in range(n_q))
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, latent: Float[Tensor, "batch dim frames"]) -> RVQOutput:
        b, _, t = latent.shape
        x = einops.rearrange(latent, "b d t -> (b t) d")
        residual = x.detach()
        quantized = torch.zeros_like(x)
        codes, dead, commit = [], 0, x.new_zeros(())
        for level in self.levels:
            if self.training and not bool(level.inited):
                level.init_from(residual, self.generator)
            idx = level.encode(residual)
            q = level.decode(idx)
            if self.training:
                dead += level.update(residual, idx, self.generator)
            quantized = quantized + q
            residual = residual - q
            codes.append(idx)
        # The encoder is pulled towards its quantised value (commitment); codebooks move by EMA.
        commit = nn.functional.mse_loss(x, quantized.detach())
        out = x + (quantized - x).detach()
        return RVQOutput(
            quantized=einops.rearrange(out, "(b t) d -> b d t", b=b, t=t),
            codes=einops.rearrange(torch.stack(codes, -1), "(b t) q -> b q t", b=b, t=t),
            commit_loss=commit,
            dead_codes=dead,
        )

    _SHARED = ("embed", "embed_avg", "cluster_size")

    def _books(self, encodec: nn.Module) -> list[tuple[EMACodebook, nn.Module]]:
        """(our level, the EnCodec codebook) pairs, in order; refuses a mismatched quantiser."""
        layers = encodec.quantizer.layers
        if len(layers) != len(self.levels):
            raise ValueError(f"the EnCodec has {len(layers)} quantizers but this RVQ has {len(self.levels)} levels")
        for level, layer in zip(self.levels, layers):
            if tuple(layer.codebook.embed.shape) != tuple(level.embed.shape):
                raise ValueError(f"codebook shape {tuple(layer.codebook.embed.shape)} != RVQ level {tuple(level.embed.shape)}")
        return [(level, layer.codebook) for level, layer in zip(self.levels, layers)]

    @torch.no_grad()
    def import_from(self, encodec: nn.Module) -> None:
        """Take the codebooks of a trained `EncodecModel` (the inverse of `export_to`)."""
        for level, book in self._books(encodec):
            for name in self._SHARED:
                getattr(level, name).copy_(getattr(book, name))
            level.inited.fill_(True)

    @torch.no_grad()
    def export_to(self, encodec: nn.Module) -> None:
        """Write the codebooks into a Hugging Face `EncodecModel`'s quantiser (same order)."""
        for level, book in self._books(encodec):
            for name in self._SHARED:
                getattr(book, name).copy_(getattr(level, name))
            book.inited.fill_(1.0)
