"""Self-tests of tests/timm_reference.py (the independent NumPy reference of timm's gMLP/ResMLP)."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timm_reference as ref  # noqa: E402

TIMM_PARAM_COUNTS = {
    "gmlp_ti16_224": 5_867_328,
    "gmlp_s16_224": 19_422_656,
    "gmlp_b16_224": 73_075_392,
    "resmlp_12_224": 15_350_872,
    "resmlp_24_224": 30_020_680,
    "resmlp_36_224": 44_690_488,
    "resmlp_big_24_224": 129_138_280,
}

TINY = dict(patch_size=4, hidden_dim=8, num_blocks=2, img_size=16, in_chans=3, num_classes=5)


def _images(seed, b=3, c=3, hw=16):
    return np.random.default_rng(seed).normal(size=(b, c, hw, hw))


@pytest.mark.parametrize("name", sorted(TIMM_PARAM_COUNTS))
def test_param_counts_match_timm(name):
    if name.startswith("gmlp"):
        shapes = ref.timm_gmlp_shapes(**ref.GMLP_VARIANTS[name])
    else:
        shapes = ref.timm_resmlp_shapes(**ref.RESMLP_VARIANTS[name])
    assert ref.num_params(shapes) == TIMM_PARAM_COUNTS[name]


def test_variant_tables():
    assert ref.RESMLP_VARIANTS["resmlp_big_24_224"]["patch_size"] == 8
    assert {v["init_values"] for v in ref.RESMLP_VARIANTS.values()} == {1e-4, 1e-5, 1e-6}
    assert all(v["mlp_ratio"] == 6 and v["num_blocks"] == 30 for v in ref.GMLP_VARIANTS.values())


@pytest.mark.parametrize("family", ["gmlp", "resmlp"])
def test_state_dict_names_shapes_and_randomisation(family):
    gen = getattr(ref, f"timm_{family}_state_dict")
    shp = getattr(ref, f"timm_{family}_shapes")
    sd = gen(0, **TINY)
    shapes = shp(**TINY)
    assert list(sd) == list(shapes)
    for k, v in sd.items():
        assert v.shape == shapes[k] and v.dtype == np.float32, k
        # no parameter left at a trivial constant (all ones / zeros / one shared value)
        assert np.unique(v).size == v.size, k
    assert "head.weight" in sd and sd["head.weight"].shape == (5, 8)
    no_head = gen(0, **dict(TINY, num_classes=0))
    assert not any(k.startswith("head") for k in no_head)
    # same seed -> same dict
    again = gen(0, **TINY)
    assert all(np.array_equal(sd[k], again[k]) for k in sd)


def test_timm_names_spot_check():
    g = ref.timm_gmlp_shapes(16, 128, 1, mlp_ratio=6, num_classes=1000)
    assert g["stem.proj.weight"] == (128, 3, 16, 16)
    assert g["blocks.0.mlp_channels.fc1.weight"] == (768, 128)
    assert g["blocks.0.mlp_channels.gate.norm.weight"] == (384,)
    assert g["blocks.0.mlp_channels.gate.proj.weight"] == (196, 196)
    assert g["blocks.0.mlp_channels.fc2.weight"] == (128, 384)
    assert g["head.weight"] == (1000, 128)
    r = ref.timm_resmlp_shapes(8, 768, 1, mlp_ratio=4)
    assert r["blocks.0.norm1.alpha"] == (1, 1, 768)
    assert r["blocks.0.linear_tokens.weight"] == (784, 784)
    assert r["blocks.0.ls1"] == (768,)
    assert r["norm.beta"] == (1, 1, 768)


@pytest.mark.parametrize("num_classes", [5, 0])
def test_forward_output_shapes(num_classes):
    x = _images(1)
    cfg = dict(TINY, num_classes=num_classes)
    for gen, fwd in ((ref.timm_gmlp_state_dict, ref.gmlp_forward),
                     (ref.timm_resmlp_state_dict, ref.resmlp_forward)):
        pooled, logits = fwd(gen(2, **cfg), x, patch_size=4)
        assert pooled.shape == (3, 8) and pooled.dtype == np.float64
        assert np.all(np.isfinite(pooled))
        if num_classes:
            assert logits.shape == (3, num_classes) and np.all(np.isfinite(logits))
        else:
            assert logits is None


def test_patch_embed_matches_naive_conv():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 8, 12))
    w = rng.normal(size=(5, 3, 4, 4))
    b = rng.normal(size=(5,))
    out = ref.patch_embed(x, w, b, 4)
    assert out.shape == (2, 6, 5)
    for bi in range(2):
        for h in range(2):
            for ww in range(3):
                patch = x[bi, :, 4 * h:4 * h + 4, 4 * ww:4 * ww + 4]
                expect = np.array([(w[o] * patch).sum() + b[o] for o in range(5)])
                np.testing.assert_allclose(out[bi, h * 3 + ww], expect, rtol=1e-12, atol=1e-12)


def test_spatial_gating_unit_token_axis_and_bias():
    """W=0, b=1 (timm's SGU init, up to 1e-6 noise) makes the gate pass u through unchanged;
    W=I, b=0 gives u * LayerNorm_1e-5(v); a per-token bias scales token t; W in [out, in]."""
    sd = ref.timm_gmlp_state_dict(4, **TINY)
    p = "blocks.0.mlp_channels.gate."
    seq = 16
    z = np.random.default_rng(5).normal(size=(2, seq, 48))      # D = 8 * 6
    u, v = z[..., :24], z[..., 24:]                              # torch.chunk: u first
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    normed = (v - mu) / np.sqrt(var + 1e-5) * sd[p + "norm.weight"] + sd[p + "norm.bias"]

    sd[p + "proj.weight"], sd[p + "proj.bias"] = np.zeros((seq, seq)), np.ones(seq)
    np.testing.assert_allclose(ref.spatial_gating_unit(sd, p, z), u, rtol=1e-12, atol=1e-12)

    sd[p + "proj.weight"], sd[p + "proj.bias"] = np.eye(seq), np.zeros(seq)
    np.testing.assert_allclose(ref.spatial_gating_unit(sd, p, z), u * normed, rtol=1e-12, atol=1e-12)

    # a per-token bias scales token t only (bias indexes the token axis)
    bias = np.arange(1, seq + 1, dtype=np.float64)
    sd[p + "proj.weight"], sd[p + "proj.bias"] = np.zeros((seq, seq)), bias
    np.testing.assert_allclose(ref.spatial_gating_unit(sd, p, z), u * bias[None, :, None],
                               rtol=1e-12, atol=1e-12)

    # proj in [out, in] layout mixes tokens: W[t, perm[t]] = 1 -> gate(t) = normed v at perm[t]
    perm = np.random.default_rng(6).permutation(seq)
    w = np.zeros((seq, seq))
    w[np.arange(seq), perm] = 1.0
    sd[p + "proj.weight"], sd[p + "proj.bias"] = w, bias
    np.testing.assert_allclose(ref.spatial_gating_unit(sd, p, z),
                               u * (normed[:, perm] + bias[None, :, None]), rtol=1e-12, atol=1e-12)


def test_gmlp_block_by_hand():
    sd = ref.timm_gmlp_state_dict(4, **TINY)
    p = "blocks.0.mlp_channels.gate."
    seq = 16
    # x + fc2(u * proj_tokens(LN_1e-5(v))) with u, v from GELU(fc1(LN_1e-6(x))), random proj
    x = np.random.default_rng(7).normal(size=(2, seq, 8))
    m = "blocks.0.mlp_channels."
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    y = y * sd["blocks.0.norm.weight"] + sd["blocks.0.norm.bias"]
    h = y @ sd[m + "fc1.weight"].astype(np.float64).T + sd[m + "fc1.bias"]
    h = np.array([[[0.5 * e * (1 + math.erf(e / math.sqrt(2))) for e in row] for row in t] for t in h])
    hu, hv = h[..., :24], h[..., 24:]
    hv = (hv - hv.mean(-1, keepdims=True)) / np.sqrt(hv.var(-1, keepdims=True) + 1e-5)
    hv = hv * sd[p + "norm.weight"] + sd[p + "norm.bias"]
    pw, pb = sd[p + "proj.weight"].astype(np.float64), sd[p + "proj.bias"].astype(np.float64)
    hv = np.stack([pw @ hv[b] + pb[:, None] for b in range(2)])
    expect = x + (hu * hv) @ sd[m + "fc2.weight"].astype(np.float64).T + sd[m + "fc2.bias"]
    np.testing.assert_allclose(ref.gmlp_block(sd, 0, x), expect, rtol=1e-10, atol=1e-10)


def test_resmlp_block_by_hand():
    sd = ref.timm_resmlp_state_dict(8, **TINY)
    x = np.random.default_rng(9).normal(size=(2, 16, 8))
    f = {k: v.astype(np.float64) for k, v in sd.items()}
    p = "blocks.1."
    y = f[p + "norm1.alpha"][0, 0] * x + f[p + "norm1.beta"][0, 0]
    y = np.stack([f[p + "linear_tokens.weight"] @ y[b] + f[p + "linear_tokens.bias"][:, None]
                  for b in range(2)])
    x1 = x + f[p + "ls1"] * y
    y = f[p + "norm2.alpha"][0, 0] * x1 + f[p + "norm2.beta"][0, 0]
    y = ref.gelu(y @ f[p + "mlp_channels.fc1.weight"].T + f[p + "mlp_channels.fc1.bias"])
    y = y @ f[p + "mlp_channels.fc2.weight"].T + f[p + "mlp_channels.fc2.bias"]
    np.testing.assert_allclose(ref.resmlp_block(sd, 1, x), x1 + f[p + "ls2"] * y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["gmlp", "resmlp"])
def test_batch_permutation_equivariance(family):
    gen = getattr(ref, f"timm_{family}_state_dict")
    fwd = getattr(ref, f"{family}_forward")
    sd = gen(10, **TINY)
    x = _images(11, b=4)
    perm = np.array([2, 0, 3, 1])
    pooled, logits = fwd(sd, x, 4)
    pooled_p, logits_p = fwd(sd, x[perm], 4)
    np.testing.assert_allclose(pooled_p, pooled[perm], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logits_p, logits[perm], rtol=1e-12, atol=1e-12)
    # and the images do not all map to the same output
    assert np.abs(pooled[0] - pooled[1]).max() > 1e-3


@pytest.mark.parametrize("family,key", [
    ("gmlp", "blocks.0.mlp_channels.gate.proj.bias"),
    ("gmlp", "blocks.1.mlp_channels.gate.norm.bias"),
    ("resmlp", "blocks.0.ls1"),
    ("resmlp", "blocks.1.ls2"),
    ("resmlp", "blocks.0.norm1.alpha"),
    ("resmlp", "norm.beta"),
])
def test_every_kind_of_parameter_matters(family, key):
    gen = getattr(ref, f"timm_{family}_state_dict")
    fwd = getattr(ref, f"{family}_forward")
    sd = gen(12, **TINY)
    x = _images(13)
    _, logits = fwd(sd, x, 4)
    sd[key] = sd[key] * 1.5 + 0.1
    _, logits2 = fwd(sd, x, 4)
    assert np.abs(logits2 - logits).max() > 1e-3


def test_gelu_exact_and_tanh():
    np.testing.assert_allclose(ref.gelu(np.array([1.0, -2.0])), [0.8413447460685429, -0.04550026389635842],
                               rtol=1e-14)
    assert abs(ref.gelu(np.array([1.0]), "tanh")[0] - 0.8411919906082768) < 1e-12


def test_official_resmlp_round_trip():
    sd = ref.timm_resmlp_state_dict(14, **TINY)
    off = ref.timm_resmlp_to_official(sd)
    assert "patch_embed.proj.weight" in off and "stem.proj.weight" not in off
    assert off["blocks.0.attn.weight"].shape == (16, 16)
    assert off["blocks.0.mlp.fc1.weight"].shape == (32, 8)
    assert off["blocks.1.gamma_1"].shape == (8,) and off["blocks.1.gamma_2"].shape == (8,)
    assert off["blocks.0.norm1.alpha"].shape == (8,) and off["norm.beta"].shape == (8,)
    assert off["head.weight"].shape == (5, 8)
    assert not any(("ls1" in k or "linear_tokens" in k or "mlp_channels" in k) for k in off)
    back = ref.official_resmlp_to_timm(off)
    assert list(back) == list(sd)
    assert all(back[k].shape == sd[k].shape and np.array_equal(back[k], sd[k]) for k in sd)
    # timm's filter leaves a non-official dict untouched
    assert ref.official_resmlp_to_timm(sd) is sd
