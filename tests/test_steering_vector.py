"""SteeringVector: save/load (checksummed), arithmetic, provenance (architecture and weights
hashes), and the constructors on planted data."""

from __future__ import annotations

import os

import pytest
import torch

from musicgen_lens.steering import SteeringVector

from steering_helpers import unit


def test_save_load_round_trip(tmp_path, model):
    sv = SteeringVector(unit(32, 9), site="resid_post", layer=1, concept="trumpet", method="probe",
                        model_hash=model.cfg.hash(), metadata={"auc": 0.93, "layers": [1, 2]})
    path = tmp_path / "trumpet.safetensors"
    sv.save(path)
    assert os.listdir(tmp_path) == ["trumpet.safetensors"]  # no temporary file left behind
    back = SteeringVector.load(path)
    assert torch.equal(back.vector, sv.vector)
    assert back.provenance() == sv.provenance()
    with open(path, "rb") as f:
        assert b"pickle" not in f.read()
    sv2 = SteeringVector(sv.vector.to(torch.bfloat16), site="z", layer=0, head=2)
    sv2.save(path)  # overwrite in place
    back2 = SteeringVector.load(path)
    assert back2.vector.dtype == torch.bfloat16 and (back2.site, back2.layer, back2.head) == ("attn.z", 0, 2)  # "z" is the old spelling
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a SteeringVector file"):
        SteeringVector.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="JSON"):
        SteeringVector(torch.ones(3), metadata={"t": torch.ones(1)}).save(tmp_path / "bad.safetensors")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_arithmetic_and_provenance():
    a = SteeringVector(torch.tensor([3.0, 4.0]), site="resid_post", layer=2, concept="a", method="diff_means", model_hash="h")
    b = SteeringVector(torch.tensor([1.0, 0.0]), site="resid_post", layer=2, concept="b", method="probe", model_hash="h")
    assert a.norm == 5.0 and a.d == 2
    assert torch.equal((a * 2).vector, torch.tensor([6.0, 8.0])) and torch.equal((2 * a).vector, (a * 2).vector)
    assert (a * 2).metadata["scale"] == 2.0 and (a * 2).concept == "a"
    assert torch.equal((-a).vector, torch.tensor([-3.0, -4.0]))
    s = a + b
    assert torch.equal(s.vector, torch.tensor([4.0, 4.0]))
    assert (s.concept, s.method, s.site, s.layer, s.model_hash) == ("a+b", "combined", "resid_post", 2, "h")
    assert [c["concept"] for c in s.metadata["components"]] == ["a", "b"]
    assert (a - b).concept == "a-b" and torch.equal((a - b).vector, torch.tensor([2.0, 4.0]))
    assert a.normalized().norm == pytest.approx(1.0) and a.normalized().concept == "a"
    assert a.to(dtype=torch.float64).vector.dtype == torch.float64
    with pytest.raises(ValueError, match="different sizes: 2 and 3"):
        a + SteeringVector(torch.ones(3))
    with pytest.raises(ValueError, match="different model architectures"):
        a + SteeringVector(torch.ones(2), model_hash="other")
    with pytest.raises(ValueError, match="zero"):
        SteeringVector(torch.zeros(2)).normalized()


def test_constructors_recover_planted_directions(model):
    g = torch.Generator().manual_seed(0)
    d = 32
    u = unit(d, 10)
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731

    pos, neg = torch.randn(400, d, generator=g) + 3 * u, torch.randn(400, d, generator=g)
    dm = SteeringVector.from_diff_means(pos, neg, site="resid_post", layer=1, concept="up", model=model)
    assert cos(dm.vector, u) > 0.95 and dm.norm == pytest.approx(3.0, rel=0.1)
    assert (dm.method, dm.model_hash, dm.concept) == ("diff_means", model.cfg.hash(), "up")

    offsets = torch.stack([torch.zeros(d), 4 * u, -2 * u])
    labels = torch.arange(300) % 3
    acts = torch.randn(300, d, generator=g) + offsets[labels]
    cm = SteeringVector.from_class_mean(acts, labels, 1, site="resid_post", layer=1)
    torch.testing.assert_close(cm.vector, acts[labels == 1].mean(0) - acts.mean(0), atol=1e-5, rtol=0)
    assert cos(cm.vector, u) > 0.95 and (cm.concept, cm.method) == ("1", "class_mean")
    cm_str = SteeringVector.from_class_mean(acts, ["a", "b", "c"] * 100, "b")
    torch.testing.assert_close(cm_str.vector, cm.vector)

    base = 5 * torch.randn(200, d, generator=g)  # large shared variance, cancelled by pairing
    p = base + 2 * u + 0.1 * torch.randn(200, d, generator=g)
    pc = SteeringVector.from_pca(p, base)
    assert cos(pc.vector, u) > 0.99 and pc.norm == pytest.approx(1.0) and pc.metadata["paired"]
    assert cos(SteeringVector.from_pca(base, p).vector, u) < -0.99  # sign points pos-ward
    up, dn = torch.randn(300, d, generator=g) + 4 * u, torch.randn(200, d, generator=g) - 4 * u
    pc2 = SteeringVector.from_pca(up, dn, paired=False)
    assert cos(pc2.vector, u) > 0.99
    with pytest.raises(ValueError, match="paired=False"):
        SteeringVector.from_pca(up, dn)

    class ClassificationProbe:
        def direction(self, target):
            return {"trumpet": 2 * u, "violin": -3 * u}[target]

    class RegressionProbe:
        concept = "tempo"

        def direction(self):
            return u[None] * 7

    sv = SteeringVector.from_probe(ClassificationProbe(), "violin", site="resid_post", layer=1, model=model)
    assert sv.norm == pytest.approx(1.0) and cos(sv.vector, u) == pytest.approx(-1.0)
    assert (sv.concept, sv.method, sv.metadata["target"], sv.model_hash) == ("violin", "probe", "violin", model.cfg.hash())
    reg = SteeringVector.from_probe(RegressionProbe(), site="resid_post", layer=1)
    assert reg.concept == "tempo" and reg.vector.shape == (d,) and reg.model_hash is None
    with pytest.raises(ValueError, match="d_model=32"):
        SteeringVector.from_diff_means(pos[:, :8], neg[:, :8], site="resid_post", model=model)




def _payload_offset(path) -> int:
    """Where the tensor bytes of a safetensors file start (8-byte header length, JSON header)."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def test_a_bit_flipped_payload_is_refused_and_old_files_still_load(tmp_path, model):
    sv = SteeringVector(unit(32, 15), site="resid_post", layer=1, concept="violin", weights_hash="0123456789abcdef")
    path = tmp_path / "v.safetensors"
    sv.save(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert len(f.metadata()["checksum"]) == 64  # sha256 of the payload, next to the provenance
    data = bytearray(path.read_bytes())
    start = _payload_offset(path)
    assert len(data) - start == 32 * 4
    for i, bit in [(start, 0x01), (start + 77, 0x80), (len(data) - 1, 0x10)]:  # a mantissa bit, a sign bit, the last byte
        flipped = bytearray(data)
        flipped[i] ^= bit
        bad = tmp_path / f"flipped{i}.safetensors"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="do not match the checksum"):
            SteeringVector.load(bad)
    back = SteeringVector.load(path)  # the intact file loads, weights hash included
    assert torch.equal(back.vector, sv.vector) and back.weights_hash == "0123456789abcdef"
    # a file written before checksums and weights hashes (no "checksum", no "weights_hash") still loads
    import json

    from safetensors.torch import save_file

    old_prov = {k: v for k, v in sv.provenance().items() if k != "weights_hash"}
    old_prov["site"] = "z"  # and the old site spellings resolve
    save_file({"vector": unit(8, 15)}, tmp_path / "old.safetensors",
              metadata={"format": "musicgen_lens.SteeringVector/1", "provenance": json.dumps(old_prov)})
    old = SteeringVector.load(tmp_path / "old.safetensors")
    assert old.weights_hash is None and old.site == "attn.z" and old.concept == "violin"


def test_weights_hash_recorded_and_vectors_from_different_weights_do_not_combine(model):
    from musicgen_lens.provenance import weights_fingerprint

    acts = torch.randn(20, 32, generator=torch.Generator().manual_seed(0))
    dm = SteeringVector.from_diff_means(acts[:10], acts[10:], site="resid_post", layer=1, model=model)
    assert dm.weights_hash == weights_fingerprint(model) and dm.provenance()["weights_hash"] == dm.weights_hash
    assert SteeringVector.from_diff_means(acts[:10], acts[10:]).weights_hash is None  # no model, nothing recorded
    a = SteeringVector(torch.ones(2), model_hash="h", weights_hash="w1", concept="a")
    assert (a + SteeringVector(torch.ones(2), model_hash="h", weights_hash="w1")).weights_hash == "w1"
    assert (a + SteeringVector(torch.ones(2), model_hash="h")).weights_hash == "w1"  # an old vector has none
    with pytest.raises(ValueError, match="different trained weights: weights_hash 'w1'"):
        a + SteeringVector(torch.ones(2), model_hash="h", weights_hash="w2")
