"""Plain-numpy signal analysis for the synthetic world's tests (tests/test_data_*.py).

The measurements the tests judge rendered audio by - spectra, timbre features and a linear
classifier, onset-based tempo, instantaneous frequency - so a test fails if a sound loses its
defining acoustic cue, not just if the code changes.
"""

from __future__ import annotations

import numpy as np

SR = 16000


def frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)


def mel_filterbank(n_mels: int = 40, n_fft: int = 1024, sr: int = SR) -> np.ndarray:
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    points = inv(np.linspace(mel(50.0), mel(0.49 * sr), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    bank = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, centre, hi = points[i : i + 3]
        bank[i] = np.clip(
            np.minimum((freqs - lo) / (centre - lo), (hi - freqs) / (hi - centre)), 0, None
        )
    return bank


MEL = mel_filterbank()
DCT = np.cos(np.pi / 40 * (np.arange(40) + 0.5)[None, :] * np.arange(1, 14)[:, None])


def timbre_features(x: np.ndarray) -> np.ndarray:
    """MFCC means and frame-to-frame changes, energy-envelope slopes (attack vs decay),
    spectral flatness (breath/noise) and spectral centroid (brightness)."""
    power = np.abs(np.fft.rfft(frames(x.astype(np.float64), 1024, 256), axis=1)) ** 2
    energy = power.sum(1)
    voiced = energy > 1e-3 * energy.max()
    power = power[voiced]
    cepstra = np.log(power @ MEL.T + 1e-8) @ DCT.T
    d_log_energy = np.diff(np.log(energy + 1e-10))
    flatness = np.mean(np.log(power + 1e-12), 1) - np.log(np.mean(power, 1) + 1e-12)
    centroid = np.log(power @ np.fft.rfftfreq(1024, 1.0 / SR) / power.sum(1))
    return np.concatenate(
        [
            cepstra.mean(0),
            np.abs(np.diff(cepstra, axis=0)).mean(0),
            [np.clip(d_log_energy, None, 0).mean(), np.clip(d_log_energy, 0, None).mean()],
            [flatness.mean(), flatness.std(), centroid.mean(), centroid.std()],
        ]
    )


def ridge_classifier(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, l2: float = 3.0
) -> np.ndarray:
    """One-vs-all ridge regression on standardised features (a linear classifier that
    needs no sklearn import, which alone costs seconds here)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    a, b = (x_train - mean) / std, (x_test - mean) / std
    targets = np.eye(n_classes)[y_train] - 1.0 / n_classes
    weights = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ targets)
    return np.argmax(b @ weights, axis=1)


def onset_strength(x: np.ndarray, hop: int = 64) -> np.ndarray:
    """Half-wave rectified rise of log energy per frame (a classic onset detector)."""
    energy = (frames(x.astype(np.float64), 512, hop) ** 2).sum(1)
    return np.clip(np.diff(np.log(energy + 1e-8)), 0, None)


def estimate_bpm(x: np.ndarray, hop: int = 64, lo: float = 60.0, hi: float = 180.0) -> float:
    """Tempo from the autocorrelation peak of the onset envelope within [lo, hi] BPM."""
    onset = onset_strength(x, hop)
    onset = onset - onset.mean()
    ac = np.correlate(onset, onset, mode="full")[len(onset) - 1 :]
    frame_rate = SR / hop
    lags = np.arange(int(frame_rate * 60.0 / hi), int(frame_rate * 60.0 / lo) + 1)
    best = int(lags[np.argmax(ac[lags])])
    # Parabolic interpolation: the true beat rarely lands on a whole frame.
    a, b, c = ac[best - 1], ac[best], ac[best + 1]
    offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return 60.0 * frame_rate / (best + offset)


def instantaneous_frequency(x: np.ndarray, f0: float) -> np.ndarray:
    """Frequency (Hz) of the partial near f0: band-pass + analytic signal, all via FFT."""
    n = len(x)
    spectrum = np.fft.fft(x.astype(np.float64))
    freqs = np.fft.fftfreq(n, 1.0 / SR)
    # Keep only the positive band around f0 (doubled): that is the analytic signal.
    spectrum *= 2.0 * ((freqs > 0.85 * f0) & (freqs < 1.15 * f0))
    phase = np.unwrap(np.angle(np.fft.ifft(spectrum)))
    inst = np.diff(phase) * SR / (2 * np.pi)
    smooth = np.convolve(inst, np.ones(160) / 160, mode="valid")  # 10 ms average
    return smooth[SR // 2 : -SR // 4]  # skip the attack and the release


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(len(x), 1.0 / SR), np.abs(
        np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)))
    )
