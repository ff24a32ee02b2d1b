"""Checkpoints of every family: timm's gMLP and ResMLP (and the official ResMLP code's names)
convert and load with timm's logits; head and resolution changes; family detection and
mismatches; SSL-prefixed backbones; FNet's position embedding at another resolution.

The expected logits come from tests/timm_reference.py, an independent float64 NumPy forward of
timm's definitions (timm names, PyTorch [out, in] Linear weights), with every parameter
randomised so that LayerScale, Affine and the gate bias all matter. The issue's bar: max
absolute difference <= 1e-4.
"""
import numpy as np
import paddle
import pytest

import passl_mixer as pm
import test_checkpoints_utils
import timm_reference as tr
from conftest import load_tool, run_in_process
from passl_mixer.checkpoints import convert_checkpoint, load_pretrained, subsequences
from passl_mixer.checkpoints.convert import model_config
from passl_mixer.checkpoints.reader import LAYOUTS, Checkpoint
from passl_mixer.checkpoints.weights import load_weights, save_weights, set_weights
from passl_mixer.engine.checkpoint import save_checkpoint
from passl_mixer.errors import CheckpointError

mixer_log = test_checkpoints_utils.mixer_log  # the fixture collecting the package's log
TOL = 1e-4
PATCH = 4
# Sizes in no variant table: the converter must write explicit dimensions.
FAMILIES = {
    "GMLP": dict(state=tr.timm_gmlp_state_dict, forward=tr.gmlp_forward, mlp_ratio=6),
    "ResMLP": dict(state=tr.timm_resmlp_state_dict, forward=tr.resmlp_forward, mlp_ratio=4),
}
DIMS = dict(patch_size=PATCH, hidden_dim=16, num_blocks=2)


def timm_state(family, seed=0, img_size=16, num_classes=7):
    """A random timm state dict of ``family`` (NumPy arrays, [out, in] Linear weights)."""
    spec = FAMILIES[family]
    return spec["state"](seed, **DIMS, mlp_ratio=spec["mlp_ratio"], img_size=img_size,
                         num_classes=num_classes)


def save_as(state, path):
    """``state`` written as .pdparams (Paddle tensors), .safetensors or a plain .npz."""
    if path.endswith(".pdparams"):
        paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, path)
    elif path.endswith(".safetensors"):
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
    else:
        np.savez(path, **state)
    return path


def run(model, images):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(images.astype(np.float32))).numpy()


def from_converted(result):
    """The model model.yaml describes, with the converted weights loaded strictly."""
    model = pm.build_model(pm.load_config(result["config"])["model"])
    set_weights(model, load_weights(result["weights"]), source=result["weights"])
    return model


def images(seed, size=16, n=3):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size))


# -- conversion: timm's logits ------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("ext", ["pdparams", "safetensors", "npz"])
def test_timm_state_dict_converts_to_timms_logits(tmp_path, family, ext):
    state = timm_state(family)
    result = convert_checkpoint(save_as(state, str(tmp_path / f"timm.{ext}")),
                                str(tmp_path / "out"))
    backbone = result["model"]["backbone"]
    assert result["layout"] == "timm" and result["family"] == family
    assert backbone["name"] == family and backbone["gelu"] == "exact"
    # not a table variant: explicit dimensions, inferred from the shapes
    assert "arch" not in backbone
    assert {k: backbone[k] for k in DIMS} == DIMS and backbone["img_size"] == 16
    assert backbone["channels_mlp_dim"] == 16 * FAMILIES[family]["mlp_ratio"]
    assert any("PyTorch layout" in note for note in result["notes"])
    assert f"name: {family}" in open(result["config"]).read()

    x = images(1)
    _, expected = FAMILIES[family]["forward"](state, x, PATCH)
    logits = run(from_converted(result), x)
    assert np.abs(logits - expected).max() <= TOL
    assert np.abs(expected).max() > 0.3  # not a comparison of near-zero numbers


def test_the_tool_converts_a_gmlp_with_a_non_square_grid(tmp_path, capsys):
    """tools/convert_checkpoint.py on a timm gMLP trained at 8x16 (2x4 patches)."""
    state = timm_state("GMLP", seed=2, img_size=(8, 16))
    src = save_as(state, str(tmp_path / "gmlp_wide.safetensors"))
    out = tmp_path / "converted"
    status, stdout, _ = run_in_process(load_tool("convert_checkpoint"),
                                       ["--src", src, "--output", str(out), "--img-size", "8",
                                        "16", "--format", "safetensors"], capsys)
    assert status == 0 and "model.yaml" in stdout
    model = from_converted({"config": str(out / "model.yaml"),
                            "weights": str(out / "model.safetensors")})
    assert model.backbone.img_size == (8, 16)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 8, 16))
    assert np.abs(run(model, x) - tr.gmlp_forward(state, x, PATCH)[1]).max() <= TOL


def test_official_resmlp_names_convert_too(tmp_path):
    """The facebookresearch/deit ResMLP code's names (patch_embed, attn, mlp, gamma_1, Affine
    alpha/beta of shape [C]) convert to the same model."""
    state = timm_state("ResMLP", seed=4)
    official = tr.timm_resmlp_to_official(state)
    assert "patch_embed.proj.weight" in official and official["norm.alpha"].shape == (16,)
    result = convert_checkpoint(save_as(official, str(tmp_path / "resmlp_12.npz")),
                                str(tmp_path / "out"))
    assert result["family"] == "ResMLP"
    assert any("renamed" in note for note in result["notes"])
    assert any("reshaped" in note and "[16] -> [1, 1, 16]" in note for note in result["notes"])
    x = images(5)
    logits = run(from_converted(result), x)
    assert np.abs(logits - tr.resmlp_forward(state, x, PATCH)[1]).max() <= TOL


def fake_checkpoint(shapes):
    """A passl_mixer-layout Checkpoint of empty arrays with the given (Paddle-layout) shapes;
    the family is told from the keys."""
    layout = next(lay for lay in LAYOUTS if lay.name == "passl_mixer")
    return Checkpoint("fake", layout, {f"backbone.{k}": np.empty(s, np.float32)
                                         for k, s in shapes.items()})


def test_table_sizes_are_named_by_arch():
    gmlp = {"stem.proj.weight": (128, 3, 16, 16)}
    for i in range(30):
        gmlp.update({f"blocks.{i}.mlp_channels.fc1.weight": (128, 768),
                     f"blocks.{i}.mlp_channels.gate.proj.weight": (196, 196)})
    cfg = model_config(fake_checkpoint(gmlp))
    assert cfg["backbone"] == {"name": "GMLP", "arch": "ti16", "img_size": 224, "gelu": "exact",
                               "norm_eps": 1e-6, "gate_norm_eps": 1e-5}
    resmlp = {"stem.proj.weight": (384, 3, 16, 16)}
    for i in range(24):
        resmlp.update({f"blocks.{i}.mlp_channels.fc1.weight": (384, 1536),
                       f"blocks.{i}.linear_tokens.weight": (196, 196)})
    cfg = model_config(fake_checkpoint(resmlp))
    assert cfg["backbone"]["name"] == "ResMLP" and cfg["backbone"]["arch"] == "s24"


# -- load_pretrained: head, resolution, family ----------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_load_pretrained_reinitialises_another_head(tmp_path, family, mixer_log):
    state = timm_state(family, seed=6, num_classes=7)
    path = save_as(state, str(tmp_path / "timm.npz"))
    cfg = {"name": "ImageClassifier",
           "backbone": {"name": family, **DIMS,
                        "channels_mlp_dim": 16 * FAMILIES[family]["mlp_ratio"], "img_size": 16},
           "head": {"name": "LinearClsHead", "num_classes": 3, "in_channels": 16}}
    model = pm.build_model(cfg)
    summary = load_pretrained(model, path)
    assert summary["head"] == "reinitialised" and summary["family"] == family
    assert "7 classes, the model's 3" in mixer_log.text()
    assert not model.head.fc.weight.numpy().any()
    x = images(7)
    model.eval()
    with paddle.no_grad():
        features = model.extract_features(paddle.to_tensor(x.astype(np.float32))).numpy()
    pooled, _ = FAMILIES[family]["forward"](state, x, PATCH)
    assert np.abs(features - pooled).max() <= TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_blockdiag_at_twice_the_resolution_is_the_pretrained_backbone_on_each_crop(tmp_path,
                                                                                   family):
    """The S x S token maps enlarged block-diagonally: on an image made of 2x2 crops, every
    block's output at each crop's tokens is the pretrained backbone's on that crop."""
    state = timm_state(family, seed=8, img_size=8, num_classes=0)  # 2x2 patches
    path = save_as(state, str(tmp_path / "small.safetensors"))
    backbone_cfg = {"name": family, **DIMS,
                    "channels_mlp_dim": 16 * FAMILIES[family]["mlp_ratio"]}
    small = pm.build_backbone({**backbone_cfg, "img_size": 8})
    big = pm.build_backbone({**backbone_cfg, "img_size": 16})
    assert load_pretrained(small, path)["resize"] is None
    assert load_pretrained(big, path)["resize"] == "blockdiag"

    x = images(9, size=16, n=2).astype(np.float32)
    small.eval(), big.eval()
    with paddle.no_grad():
        got = big.forward_intermediates(paddle.to_tensor(x))[1]
        parts = subsequences((2, 2), (4, 4))
        crops = [x[:, :, r:r + 8, c:c + 8] for r in (0, 8) for c in (0, 8)]
        for tokens, crop in zip(parts, crops):
            want = small.forward_intermediates(paddle.to_tensor(crop))[1]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g.numpy()[:, tokens], w.numpy(), atol=1e-5)
        expected = np.mean([FAMILIES[family]["forward"](state, crop, PATCH)[0]
                            for crop in crops], axis=0)
        assert np.abs(big(paddle.to_tensor(x)).numpy() - expected).max() <= TOL


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    path = save_as(timm_state("GMLP"), str(tmp_path / "gmlp.npz"))
    model = pm.build_model({"name": "ImageClassifier",
                            "backbone": {"name": "ResMLP", **DIMS, "channels_mlp_dim": 64,
                                         "img_size": 16},
                            "head": {"name": "LinearClsHead", "num_classes": 7,
                                     "in_channels": 16}})
    with pytest.raises(CheckpointError, match="the checkpoint is a GMLP, the model's backbone "
                                              "a ResMLP"):
        load_pretrained(model, path)


def test_an_unknown_family_names_the_markers(tmp_path):
    state = {"stem.proj.weight": np.zeros((16, 3, 4, 4), np.float32),
             "blocks.0.mystery.weight": np.zeros((16, 16), np.float32)}
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(save_as(state, str(tmp_path / "odd.npz")), str(tmp_path / "out"))
    message = str(info.value)
    assert "blocks.0.mystery.weight" in message
    for family, marker in (("MlpMixer", "blocks.0.mlp_tokens.fc1.weight"),
                           ("GMLP", "blocks.0.mlp_channels.gate.proj.weight"),
                           ("ResMLP", "blocks.0.linear_tokens.weight")):
        assert f"{family}: '{marker}'" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prefix,other", [("base_encoder.backbone.", "momentum_encoder.backbone."),
                                          ("online.backbone.", "target.backbone.")])
def test_ssl_checkpoints_of_a_gmlp_give_its_backbone(tmp_path, prefix, other):
    paddle.seed(10)
    cfg = {"name": "GMLP", **DIMS, "channels_mlp_dim": 96, "img_size": 16}
    trained = pm.build_backbone(cfg)
    backbone = trained.state_dict()
    state = {prefix + k: v for k, v in backbone.items()}
    state.update({other + k: paddle.zeros_like(v) for k, v in backbone.items()})
    state["predictor.fc.weight"] = paddle.zeros([4, 4])
    path = str(tmp_path / "ssl.pdckpt")
    save_checkpoint({"model": state, "epoch": 3}, path)

    model = pm.build_model({"name": "ImageClassifier", "backbone": cfg,
                            "head": {"name": "LinearClsHead", "num_classes": 4,
                                     "in_channels": 16}})
    summary = load_pretrained(model, path)
    assert summary["family"] == "GMLP" and summary["ignored"] == len(backbone) + 1
    for k, v in backbone.items():
        np.testing.assert_array_equal(model.backbone.state_dict()[k].numpy(), v.numpy())
    result = convert_checkpoint(path, str(tmp_path / "out"))
    assert result["model"]["backbone"]["gelu"] == "exact"  # gMLP's own (DEFAULT_GELU)
    assert result["model"]["head"]["num_classes"] == 0


# -- FNet: the position embedding ------------------------------------------------------------
FNET = dict(name="FNet", patch_size=PATCH, hidden_dim=16, num_blocks=2, mlp_dim=32)


def fnet_classifier(img_size, num_classes=5):
    return pm.build_model({"name": "ImageClassifier", "backbone": {**FNET, "img_size": img_size},
                           "head": {"name": "LinearClsHead", "num_classes": num_classes,
                                    "in_channels": 16}})


def test_fnet_converts_and_resamples_its_position_embedding(tmp_path, mixer_log):
    paddle.seed(11)
    source = fnet_classifier(16)
    grid = np.random.default_rng(12).normal(0, 1, (1, 16, 16)).astype(np.float32)
    source.backbone.pos_embed.set_value(grid)
    path = str(tmp_path / "fnet.pdparams")
    save_weights(source.state_dict(), path)

    result = convert_checkpoint(path, str(tmp_path / "out"))
    assert result["layout"] == "passl_mixer"
    assert result["model"]["backbone"] == {**FNET, "img_size": 16, "gelu": "exact",
                                           "norm_eps": 1e-6}
    converted = from_converted(result)
    x = images(13)
    np.testing.assert_array_equal(run(converted, x), run(source, x))

    bigger = fnet_classifier(24)  # 4x4 -> 6x6 patches
    summary = load_pretrained(bigger, path)
    assert summary["resize"] == "interpolate" and summary["head"] == "loaded"
    assert "pos_embed" in mixer_log.text() and "4x4 -> 6x6 patches by interpolation" in (
        mixer_log.text())
    # bilinear, half-pixel centres: what paddle's own interpolate computes
    image = paddle.to_tensor(grid.reshape(1, 4, 4, 16).transpose(0, 3, 1, 2))
    want = paddle.nn.functional.interpolate(image, size=[6, 6], mode="bilinear",
                                            align_corners=False)
    want = want.numpy().transpose(0, 2, 3, 1).reshape(1, 36, 16)
    np.testing.assert_allclose(bigger.backbone.pos_embed.numpy(), want, atol=1e-6)

    with pytest.raises(CheckpointError, match="not exact for FNet"):
        load_pretrained(fnet_classifier(32), path, resize="blockdiag")
