"""A multi-resolution spectrogram discriminator for the codec's adversarial fine-tune.

Mel and waveform losses alone let a small decoder smear harmonics into the bins between them:
an L1 on averages cannot tell "smeared" from "sharp". A discriminator that looks at
log-magnitude spectrograms at several resolutions (UnivNet's MRD, scaled down for 2 CPU cores:
16 channels, strided in frequency from the first layer) can, and its feature-matching term pushes
the decoder towards the real spectral texture. On the toy codec a short CPU fine-tune with it
did not help (see the README's measurements); it is here for longer runs.

Losses are least-squares GAN (HiFi-GAN) plus relative L1 feature matching (audiocraft
normalises each layer by the real features' mean magnitude, so deep and shallow layers weigh
alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class SpectrogramDiscriminator(nn.Module):
    """One resolution: log |STFT| -> 2D convolutions (strided in frequency) -> a score map."""

    def __init__(self, n_fft: int, channels: int = 16, n_layers: int = 4):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(1, channels, (3, 5), stride=(1, 2), padding=(1, 2)))]
        convs += [weight_norm(nn.Conv2d(channels, channels, (3, 5), stride=(1, 2), padding=(1, 2))) for _ in range(n_layers - 1)]
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, audio: Float[Tensor, "batch 1 samples"]) -> Float[Tensor, "batch 1 frames bins"]:
        spec = torch.stft(audio[:, 0], self.n_fft, hop_length=self.hop, window=self.window, return_complex=True)
        # log magnitude: weak bins between harmonics count as much as the harmonics
        return torch.log(spec.abs().clamp(min=1e-5)).transpose(1, 2)[:, None]

    def forward(self, audio: Float[Tensor, "batch 1 samples"]) -> tuple[Tensor, list[Tensor]]:
        x = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.post(x), features


class MultiResolutionDiscriminator(nn.Module):
    """One `SpectrogramDiscriminator` per STFT size."""

    def __init__(self, n_ffts: Sequence[int] = (256, 512, 1024), channels: int = 16, n_layers: int = 4):
        super().__init__()
        self.discriminators = nn.ModuleList(SpectrogramDiscriminator(n, channels, n_layers) for n in n_ffts)

    def forward(self, audio: Float[Tensor, "batch 1 samples"]) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(audio) for d in self.discriminators]


def discriminator_loss(real: list[tuple[Tensor, list[Tensor]]], fake: list[tuple[Tensor, list[Tensor]]]) -> Tensor:
    """Least squares: real scores towards 1, fake towards 0 (fake must be detached by the caller)."""
    return sum(((r - 1) ** 2).mean() + (f**2).mean() for (r, _), (f, _) in zip(real, fake)) / len(real)


def generator_losses(real: list[tuple[Tensor, list[Tensor]]], fake: list[tuple[Tensor, list[Tensor]]]) -> tuple[Tensor, Tensor]:
    """(adversarial, feature matching) for the generator; `real` features are treated as constants."""
    adv = sum(((f - 1) ** 2).mean() for f, _ in fake) / len(fake)
    fm, n = fake[0][0].new_zeros(()), 0
    for (_, feats_r), (_, feats_f) in zip(real, fake):
        for r, f in zip(feats_r, feats_f):
            r = r.detach()
            fm = fm + (f - r).abs().mean() / (r.abs().mean() + 1e-8)
            n += 1
    return adv, fm / n
