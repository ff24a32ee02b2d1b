"""Resolution change of pretrained weights (the paper's Appendix C, and interpolation).

The paper splits the larger image spatially into K x K equal parts; each part's tokens form
one subsequence of S tokens. The indices of those parts are computed here independently of
the code under test, from the row-major token order over the whole grid.
"""
import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.checkpoints import (blockdiag_token_mixing, interpolate_token_mixing,
                                     load_pretrained, subsequences)
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.errors import CheckpointError
from passl_mixer.models.layers import Mlp
from test_checkpoints_utils import mixer_log, tiny_classifier_cfg  # noqa: F401 (fixture)


def part_tokens(src, dst):
    """For each part (a, b) of the K_h x K_w cut, row-major: its tokens' indices in the
    row-major order of the whole dst grid, listed row-major within the part."""
    (h, w), (H, W) = src, dst
    return [[(a * h + r) * W + (b * w + c) for r in range(h) for c in range(w)]
            for a in range(H // h) for b in range(W // w)]


def random_mlp(rng, s, d):
    return {"fc1.weight": rng.normal(0, 0.5, (s, d)).astype(np.float32),
            "fc1.bias": rng.normal(0, 0.1, d).astype(np.float32),
            "fc2.weight": rng.normal(0, 0.5, (d, s)).astype(np.float32),
            "fc2.bias": rng.normal(0, 0.1, s).astype(np.float32)}


def paddle_mlp(weights):
    s, d = weights["fc1.weight"].shape
    mlp = Mlp(s, d, gelu="tanh")
    mlp.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    mlp.eval()
    return mlp


@pytest.mark.parametrize("src,dst", [((3, 3), (6, 6)),    # K = 2, as in the paper
                                     ((2, 3), (4, 9))])   # K_h = 2, K_w = 3
def test_blockdiag_token_mixing_is_the_pretrained_mixing_on_each_part(src, dst):
    rng = np.random.default_rng(0)
    s = src[0] * src[1]
    pretrained = random_mlp(rng, s, 5)
    enlarged = blockdiag_token_mixing(pretrained, src, dst)
    parts = part_tokens(src, dst)
    assert subsequences(src, dst).tolist() == parts
    assert enlarged["fc1.weight"].shape == (len(parts) * s, len(parts) * 5)

    x = rng.normal(0, 1, (2, 4, dst[0] * dst[1])).astype(np.float32)  # [B, C, S'] table
    with paddle.no_grad():
        big = paddle_mlp(enlarged)(paddle.to_tensor(x)).numpy()
        small = paddle_mlp(pretrained)
        for tokens in parts:
            expected = small(paddle.to_tensor(x[:, :, tokens])).numpy()
            np.testing.assert_allclose(big[:, :, tokens], expected, atol=1e-5)


def test_blockdiag_model_is_the_pretrained_model_on_each_crop(tmp_path):
    """Every other layer acts per token, so at 2x the resolution the whole network computes the
    pretrained network on each of the 2x2 crops; the logits are their mean."""
    rng = np.random.default_rng(1)
    small = pm.build_model(tiny_classifier_cfg(img_size=8, num_classes=3))  # 2x2 patches
    small.head.fc.weight.set_value(rng.normal(0, 1, (16, 3)).astype(np.float32))
    path = str(tmp_path / "small.pdparams")
    save_weights(small.state_dict(), path)

    big = pm.build_model(tiny_classifier_cfg(img_size=16, num_classes=3, tokens_mlp_dim=4 * 8))
    summary = load_pretrained(big, path)
    assert summary["resize"] == "blockdiag" and summary["head"] == "loaded"

    images = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    small.eval()
    big.eval()
    with paddle.no_grad():
        got = big(paddle.to_tensor(images)).numpy()
        crops = [small(paddle.to_tensor(images[:, :, r:r + 8, c:c + 8])).numpy()
                 for r in (0, 8) for c in (0, 8)]
    np.testing.assert_allclose(got, np.mean(crops, axis=0), atol=1e-5)


def test_blockdiag_needs_the_enlarged_width(tmp_path):
    small = pm.build_model(tiny_classifier_cfg(img_size=8))
    path = str(tmp_path / "small.pdparams")
    save_weights(small.state_dict(), path)
    big = pm.build_model(tiny_classifier_cfg(img_size=16, tokens_mlp_dim=16))
    with pytest.raises(CheckpointError, match="tokens_mlp_dim 32 with resize blockdiag"):
        load_pretrained(big, path, resize="blockdiag")


def test_interpolation_for_a_non_integer_ratio(tmp_path, mixer_log):
    rng = np.random.default_rng(2)
    small = pm.build_model(tiny_classifier_cfg(img_size=8))     # 2x2 patches
    path = str(tmp_path / "small.pdparams")
    save_weights(small.state_dict(), path)
    model = pm.build_model(tiny_classifier_cfg(img_size=12))    # 3x3: ratio 1.5
    summary = load_pretrained(model, path)
    assert summary["resize"] == "interpolate"
    assert "approximation" in mixer_log.text()
    token = model.backbone.blocks[0].mlp_tokens
    assert list(token.fc1.weight.shape) == [9, 8] and list(token.fc2.weight.shape) == [8, 9]
    model.eval()
    out = model(paddle.to_tensor(rng.uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32)))
    assert out.shape == [2, 5] and np.isfinite(out.numpy()).all()

    with pytest.raises(CheckpointError, match="integer factor"):
        load_pretrained(model, path, resize="blockdiag")


def test_interpolation_shapes_and_scaling():
    rng = np.random.default_rng(3)
    mlp = random_mlp(rng, 4 * 4, 6)
    # a weight constant over the grid stays constant; fc1 is scaled by S / S'
    mlp["fc1.weight"][:] = 2.0
    mlp["fc2.bias"][:] = 0.5
    out = interpolate_token_mixing(mlp, (4, 4), (7, 5))
    assert out["fc1.weight"].shape == (35, 6) and out["fc2.weight"].shape == (6, 35)
    assert out["fc2.bias"].shape == (35,) and out["fc1.bias"].shape == (6,)
    np.testing.assert_allclose(out["fc1.weight"], 2.0 * 16 / 35, rtol=1e-6)
    np.testing.assert_allclose(out["fc2.bias"], 0.5, rtol=1e-6)
    # the same grid is the identity
    same = interpolate_token_mixing(mlp, (4, 4), (4, 4))
    np.testing.assert_allclose(same["fc2.weight"], mlp["fc2.weight"], atol=1e-6)
