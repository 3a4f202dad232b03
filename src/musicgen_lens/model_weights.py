"""Stacked weights of HookedMusicGen in TransformerLens layout, and the factored OV/QK circuits.

`model.W_Q` is [n_layers, n_heads, d_model, d_head] as on a HookedTransformer; the `_cross`
variants are cross-attention's (text MusicGen only). They are views of the blocks' parameters,
stacked on access: read them for circuit analysis, write through the blocks.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens.FactoredMatrix import FactoredMatrix

__all__ = ["WeightsMixin"]


class WeightsMixin:
    """W_E, W_U, W_pos, W_Q/K/V/O (+ _cross), W_in/W_out, the conditioning projections, QK/OV."""

    def _stack(self, attr: str, cross: bool = False) -> torch.Tensor:
        if cross and self.cfg.is_melody:
            # not AttributeError: inside a property, nn.Module.__getattr__ would replace the message
            raise ValueError(
                f"{attr}_cross: this is a MusicGen-melody model, which has no cross-attention (its text and chroma are "
                "prepended to the sequence and read by self-attention: use W_Q, W_K, ... instead)"
            )
        return torch.stack([getattr(b.cross_attn if cross else b.attn, attr) for b in self.blocks])

    @property
    def W_E(self) -> Float[torch.Tensor, "n_codebooks d_vocab_plus_1 d_model"]:
        return self.embed.W_E

    @property
    def W_U(self) -> Float[torch.Tensor, "n_codebooks d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def W_pos(self) -> Float[torch.Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_Q(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_Q")

    @property
    def W_K(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_K")

    @property
    def W_V(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_V")

    @property
    def W_O(self) -> Float[torch.Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("W_O")

    @property
    def W_Q_cross(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_Q", cross=True)

    @property
    def W_K_cross(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_K", cross=True)

    @property
    def W_V_cross(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_V", cross=True)

    @property
    def W_O_cross(self) -> Float[torch.Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("W_O", cross=True)

    @property
    def W_in(self) -> Float[torch.Tensor, "n_layers d_model d_mlp"]:
        return torch.stack([b.mlp.W_in for b in self.blocks])

    @property
    def W_out(self) -> Float[torch.Tensor, "n_layers d_mlp d_model"]:
        return torch.stack([b.mlp.W_out for b in self.blocks])

    @property
    def W_cond(self) -> Float[torch.Tensor, "d_cond d_model"] | None:
        return self.cond_proj.W_cond if self.cfg.has_cond_proj else None

    @property
    def b_cond(self) -> Float[torch.Tensor, "d_model"] | None:
        return self.cond_proj.b_cond if self.cfg.has_cond_proj else None

    @property
    def W_chroma(self) -> Float[torch.Tensor, "n_chroma d_model"] | None:
        return self.chroma_proj.W_chroma if self.cfg.is_melody and self.cfg.has_chroma_proj else None

    @property
    def b_chroma(self) -> Float[torch.Tensor, "d_model"] | None:
        return self.chroma_proj.b_chroma if self.cfg.is_melody and self.cfg.has_chroma_proj else None

    @property
    def QK(self) -> FactoredMatrix:  # [n_layers, n_heads, d_model, d_model]
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:  # [n_layers, n_heads, d_model, d_model]
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK_cross(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_Q_cross, self.W_K_cross.transpose(-2, -1))

    @property
    def OV_cross(self) -> FactoredMatrix:
        return FactoredMatrix(self.W_V_cross, self.W_O_cross)
