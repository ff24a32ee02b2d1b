"""A checkpoint in the official layout, converted, gives the original Flax Mixer's logits.

The expected logits come from the independent NumPy forward in test_checkpoints_utils.py
(float64, NHWC); the Paddle model runs the converted weights in float32 on the same images in
NCHW. The issue's bar: max absolute difference <= 1e-4.
"""
import numpy as np
import paddle

import passl_mixer as pm
from passl_mixer.checkpoints import convert_checkpoint, load_pretrained
from passl_mixer.checkpoints.weights import load_weights, set_weights
from test_checkpoints_utils import TINY, official_params, reference_forward, write_npz

TOL = 1e-4


def paddle_forward(model, images_nhwc):
    model.eval()
    with paddle.no_grad():
        x = paddle.to_tensor(images_nhwc.transpose(0, 3, 1, 2).astype(np.float32))
        return model(x).numpy()


def converted_model(npz_path, out_dir, fmt="pdparams"):
    """Convert with the library, build from the written model.yaml, load strictly."""
    result = convert_checkpoint(npz_path, str(out_dir), format=fmt)
    model = pm.build_model(pm.load_config(result["config"])["model"])
    set_weights(model, load_weights(result["weights"]), source=result["weights"])
    return model, result


def test_converted_official_checkpoint_matches_the_original_logits(tmp_path):
    rng = np.random.default_rng(0)
    params = official_params(rng, img_size=16, num_classes=7)
    images = rng.uniform(-1, 1, (4, 16, 16, 3))  # inputs in [-1, 1], as the original scales them
    _, expected = reference_forward(params, images, TINY["patch_size"])

    model, result = converted_model(write_npz(tmp_path / "Mixer-T.npz", params), tmp_path / "out")
    assert result["model"]["backbone"]["gelu"] == "tanh"
    assert result["model"]["backbone"]["norm_eps"] == 1e-6
    logits = paddle_forward(model, images)
    assert np.abs(logits - expected).max() <= TOL
    assert np.abs(expected).max() > 0.5  # the comparison is not between near-zero numbers


def test_loading_the_official_npz_directly_matches_too(tmp_path):
    rng = np.random.default_rng(1)
    params = official_params(rng, img_size=16, num_classes=7)
    images = rng.uniform(-1, 1, (2, 16, 16, 3))
    _, expected = reference_forward(params, images, TINY["patch_size"])
    model = pm.build_model({
        "name": "ImageClassifier",
        "backbone": {"name": "MlpMixer", **TINY, "img_size": 16},  # defaults: tanh, eps 1e-6
        "head": {"name": "LinearClsHead", "num_classes": 7, "in_channels": TINY["hidden_dim"]}})
    summary = load_pretrained(model, write_npz(tmp_path / "m.npz", params))
    assert summary["head"] == "loaded" and summary["layout"] == "official"
    assert np.abs(paddle_forward(model, images) - expected).max() <= TOL


def test_headless_checkpoint_matches_the_original_features(tmp_path):
    """SAM/GSAM checkpoints may come without a head: the pooled features must still match."""
    rng = np.random.default_rng(2)
    params = official_params(rng, img_size=16, num_classes=0)
    images = rng.uniform(-1, 1, (2, 16, 16, 3))
    features, _ = reference_forward(params, images, TINY["patch_size"])
    model, result = converted_model(write_npz(tmp_path / "sam.npz", params), tmp_path / "out",
                                    fmt="safetensors")
    assert result["model"]["head"]["num_classes"] == 0
    model.eval()
    with paddle.no_grad():
        got = model.extract_features(
            paddle.to_tensor(images.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    assert np.abs(got - features).max() <= TOL


def test_non_square_grid_checkpoint_matches(tmp_path):
    """A 8x16 checkpoint (2x4 patches): the token order must be row-major over (h, w)."""
    rng = np.random.default_rng(3)
    params = official_params(rng, img_size=(8, 16), num_classes=3)
    images = rng.uniform(-1, 1, (2, 8, 16, 3))
    _, expected = reference_forward(params, images, TINY["patch_size"])
    result = convert_checkpoint(write_npz(tmp_path / "wide.npz", params), str(tmp_path / "out"),
                                img_size=[8, 16])
    assert result["model"]["backbone"]["img_size"] == [8, 16]
    model = pm.build_model(pm.load_config(result["config"])["model"])
    set_weights(model, load_weights(result["weights"]))
    assert np.abs(paddle_forward(model, images) - expected).max() <= TOL
