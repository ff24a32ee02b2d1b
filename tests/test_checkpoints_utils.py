"""Helpers for the checkpoint tests: tiny checkpoints in the official and timm layouts, and an
independent NumPy forward pass of the original Flax Mixer.

The reference forward is written from the paper and the facts of the original code, not from
this package: NHWC input, the stem conv (kernel = stride = patch) as patch extraction and a
matmul with the [kh, kw, in, out] kernel, tokens row-major over (h, w), LayerNorm with epsilon
1e-6, tanh GELU, token mixing on the transposed [B, C, S] table, Dense kernels [in, out],
pre-head LayerNorm, mean over tokens, head [C, classes]. It runs in float64.
"""
import logging

import numpy as np
import pytest

import passl_mixer as pm

# A Mixer small enough that every test runs in milliseconds: 16x16 images in 4x4 patches.
TINY = dict(patch_size=4, hidden_dim=16, num_blocks=2, tokens_mlp_dim=8, channels_mlp_dim=32)


def official_params(rng, img_size=16, num_classes=5, in_channels=3, dims=TINY):
    """Random float32 weights in the official .npz layout (key -> array)."""
    p, c = dims["patch_size"], dims["hidden_dim"]
    rows, cols = (img_size, img_size) if isinstance(img_size, int) else img_size
    s = (rows // p) * (cols // p)

    def dense(prefix, n_in, n_out):
        return {f"{prefix}/kernel": rng.normal(0, n_in ** -0.5, (n_in, n_out)),
                f"{prefix}/bias": rng.normal(0, 0.1, n_out)}

    def norm(prefix):
        return {f"{prefix}/scale": 1 + rng.normal(0, 0.1, c),
                f"{prefix}/bias": rng.normal(0, 0.1, c)}

    params = {"stem/kernel": rng.normal(0, (p * p * in_channels) ** -0.5, (p, p, in_channels, c)),
              "stem/bias": rng.normal(0, 0.1, c)}
    for i in range(dims["num_blocks"]):
        b = f"MixerBlock_{i}"
        params.update(norm(f"{b}/LayerNorm_0"))
        params.update(dense(f"{b}/token_mixing/Dense_0", s, dims["tokens_mlp_dim"]))
        params.update(dense(f"{b}/token_mixing/Dense_1", dims["tokens_mlp_dim"], s))
        params.update(norm(f"{b}/LayerNorm_1"))
        params.update(dense(f"{b}/channel_mixing/Dense_0", c, dims["channels_mlp_dim"]))
        params.update(dense(f"{b}/channel_mixing/Dense_1", dims["channels_mlp_dim"], c))
    params.update(norm("pre_head_layer_norm"))
    if num_classes:
        params.update(dense("head", c, num_classes))
    return {k: v.astype(np.float32) for k, v in params.items()}


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return str(path)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def reference_stem(p, images_nhwc, patch):
    """Tokens [B, S, C], row-major over (h, w): the conv as patch extraction + matmul."""
    b, h, w, cin = images_nhwc.shape
    gh, gw = h // patch, w // patch
    patches = (images_nhwc.astype(np.float64).reshape(b, gh, patch, gw, patch, cin)
               .transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, patch * patch * cin))
    return patches @ p["stem/kernel"].reshape(patch * patch * cin, -1) + p["stem/bias"]


def reference_forward(params, images_nhwc, patch):
    """(pooled features [B, C], logits [B, classes] or None) of the original Flax Mixer."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = reference_stem(p, images_nhwc, patch)

    def mlp(y, prefix):
        hidden = gelu_tanh(y @ p[f"{prefix}/Dense_0/kernel"] + p[f"{prefix}/Dense_0/bias"])
        return hidden @ p[f"{prefix}/Dense_1/kernel"] + p[f"{prefix}/Dense_1/bias"]

    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in p:
        blk = f"MixerBlock_{i}"
        y = layer_norm(x, p[f"{blk}/LayerNorm_0/scale"], p[f"{blk}/LayerNorm_0/bias"])
        x = x + mlp(y.swapaxes(1, 2), f"{blk}/token_mixing").swapaxes(1, 2)
        y = layer_norm(x, p[f"{blk}/LayerNorm_1/scale"], p[f"{blk}/LayerNorm_1/bias"])
        x = x + mlp(y, f"{blk}/channel_mixing")
        i += 1
    x = layer_norm(x, p["pre_head_layer_norm/scale"], p["pre_head_layer_norm/bias"])
    features = x.mean(axis=1)
    logits = features @ p["head/kernel"] + p["head/bias"] if "head/kernel" in p else None
    return features, logits


def tiny_classifier_cfg(img_size=16, num_classes=5, tokens_mlp_dim=8, gelu="tanh"):
    return {"name": "ImageClassifier",
            "backbone": {"name": "MlpMixer", **TINY, "tokens_mlp_dim": tokens_mlp_dim,
                         "img_size": img_size, "gelu": gelu, "norm_eps": 1e-6},
            "head": {"name": "LinearClsHead", "num_classes": num_classes,
                     "in_channels": TINY["hidden_dim"]}}


def timm_state(model):
    """A passl_mixer ImageClassifier's weights renamed to the timm layout (numpy arrays)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        else:
            k = k.replace("head.fc.", "head.")
        out[k] = v.numpy()
    return out


class LogRecords(logging.Handler):
    """Collects the messages of the 'passl_mixer' logger (which may not propagate to root)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def text(self):
        return "\n".join(self.messages)


@pytest.fixture
def mixer_log():
    logger = logging.getLogger("passl_mixer")
    handler, level = LogRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- the reference itself ----------------------------------------------------------------------
def test_reference_stem_is_a_strided_convolution():
    """The reference's patch-matmul stem equals a direct sum over each window (NHWC conv,
    stride = kernel), tokens in row-major (h, w) order."""
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) for k, v in official_params(rng, img_size=8).items()}
    images = rng.uniform(-1, 1, (2, 8, 8, 3))
    patch, gh = TINY["patch_size"], 8 // TINY["patch_size"]
    direct = np.zeros((2, gh * gh, TINY["hidden_dim"]))
    for r in range(gh):
        for c in range(gh):
            window = images[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch, :]
            direct[:, r * gh + c] = (np.einsum("bhwi,hwio->bo", window, params["stem/kernel"])
                                     + params["stem/bias"])
    np.testing.assert_allclose(reference_stem(params, images, patch), direct, atol=1e-10)


def test_tiny_config_builds():
    model = pm.build_model(tiny_classifier_cfg())
    assert model.backbone.num_tokens == 16
