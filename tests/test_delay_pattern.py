"""DelayPattern: the layout (against the functional forms HF parity was proven with) and the time model."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens.delay_pattern import DelayPattern, apply_delay_pattern, revert_delay_pattern


def test_worked_example_of_the_docstring():
    p = DelayPattern(4, 1, frame_rate=50)
    frames = torch.tensor([[[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]]])
    seq = p.apply(frames, pad_id=-1)
    assert seq.tolist() == [[
        [-1, 10, 11, 12, -1, -1, -1],
        [-1, -1, 20, 21, 22, -1, -1],
        [-1, -1, -1, 30, 31, 32, -1],
        [-1, -1, -1, -1, 40, 41, 42],
    ]]
    assert torch.equal(p.revert(seq), frames)
    assert p.length_for(3) == 7 and p.frames_in(7) == 3 and p.max_delay == 3


@pytest.mark.parametrize("k, channels", [(4, 1), (8, 2), (1, 1)])
def test_stereo_and_functional_forms_agree(k, channels):
    p = DelayPattern(k, channels)
    codes = torch.randint(0, 50, (2, k, 6))
    assert p.delays == [i // channels for i in range(k)]
    seq = p.apply(codes, pad_id=99)
    assert torch.equal(seq, apply_delay_pattern(codes, 99, channels))
    assert torch.equal(p.revert(seq), codes) and torch.equal(revert_delay_pattern(seq, channels), codes)
    short = p.apply(codes, pad_id=99, length=4)  # a prefix of the full layout
    assert torch.equal(short, seq[..., :4])


def test_time_model():
    p = DelayPattern(4, 1, frame_rate=50)
    assert p.frame_of(3) == 0 and p.position_of(0) == 3 and p.seconds_of(53) == 1.0
    assert p.frame_at(0.58) == 29  # 0.58 * 50 = 28.999999999999996
    assert p.frame_at(0.0) == 0 and p.frame_at(0.01) == 1
    assert p.frames_for_seconds(2.0) == 100
    assert p.max_frames(1024) == 1020 and p.max_frames(1024, n_prefix=20) == 1000
    secs = p.position_seconds(5)
    assert secs.dtype == torch.float64 and secs.tolist() == [(i - 3) / 50 for i in range(5)]


def test_bad_patterns_are_refused():
    with pytest.raises(ValueError, match="divisible by audio_channels"):
        DelayPattern(3, 2)
    with pytest.raises(ValueError, match="frame_rate"):
        DelayPattern(4, 1, frame_rate=0)
    with pytest.raises(ValueError, match="codebooks"):
        DelayPattern(4).apply(torch.zeros(1, 3, 2, dtype=torch.long), pad_id=0)


def test_model_pattern_is_the_models(model):
    assert model.pattern.max_delay == model.ctx.max_delay == model.cfg.n_codebooks - 1
    assert model.pattern.frame_rate == model.cfg.frame_rate
