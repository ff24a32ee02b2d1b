"""passl_mixer.models.info: parameter and MAC accounting of every family's variants
(tools/model_info.py prints it)."""
import os

import paddle
import pytest

import passl_mixer as pm
import timm_reference
from conftest import ROOT, TINY_BACKBONE, TINY_BACKBONES, load_tool, run_in_process, write_yaml
from passl_mixer.models.info import (classifier_macs, count_parameters, describe_classifier,
                                     describe_variants)


def classifier_cfg(backbone, num_classes, in_channels):
    return {"name": "ImageClassifier", "backbone": backbone,
            "head": {"name": "LinearClsHead", "num_classes": num_classes,
                     "in_channels": in_channels}}


def test_count_parameters_counts_every_value():
    assert count_parameters(paddle.nn.Linear(3, 4)) == 3 * 4 + 4


def test_lazy_and_built_models_count_the_same():
    cfg = classifier_cfg(dict(TINY_BACKBONE), 7, TINY_BACKBONE["hidden_dim"])
    with paddle.LazyGuard():
        lazy = pm.build_model(cfg)
    model = pm.build_model(cfg)
    assert describe_classifier(lazy) == describe_classifier(model)
    assert count_parameters(model) == sum(int(p.numel()) for p in model.parameters())


def test_b16_matches_the_original_parameter_count_and_the_readme_table():
    cfg = classifier_cfg({"name": "MlpMixer", "arch": "b16"}, 1000, 768)
    with paddle.LazyGuard():  # shapes only
        model = pm.build_model(cfg)
    backbone, total, gmacs = describe_classifier(model)
    assert total == 59_880_472 and total - backbone == 768 * 1000 + 1000
    assert classifier_macs(model) == model.backbone.macs() + 768 * 1000
    assert f"{gmacs:.2f}" == "12.60"


def test_every_family_variant_is_described_with_its_head():
    for family, archs in pm.list_variants().items():
        rows = describe_variants(family, num_classes=1000)
        assert [r["arch"] for r in rows] == list(archs), family
        for r in rows:
            c = archs[r["arch"]]["hidden_dim"]
            assert r["params"] == r["backbone_params"] + c * 1000 + 1000, (family, r)
            assert r["img_size"] == [224, 224] and r["gmacs"] > 0, (family, r)
            assert r["num_tokens"] == (224 // r["patch_size"]) ** 2, (family, r)


@pytest.mark.parametrize("family, timm_variants, timm_shapes", [
    ("GMLP", timm_reference.GMLP_VARIANTS, timm_reference.timm_gmlp_shapes),
    ("ResMLP", timm_reference.RESMLP_VARIANTS, timm_reference.timm_resmlp_shapes)])
def test_gmlp_and_resmlp_parameter_counts_equal_timms(family, timm_variants, timm_shapes):
    """The independent NumPy reference's timm shapes, variant by variant in table order."""
    if family not in pm.list_variants():
        pytest.skip(f"{family} is not registered")
    rows = describe_variants(family, num_classes=1000)
    assert len(rows) == len(timm_variants)
    for row, (timm_name, dims) in zip(rows, timm_variants.items()):
        assert row["params"] == timm_reference.num_params(timm_shapes(**dims)), timm_name


def test_model_info_tool_prints_every_familys_table(capsys):
    status, out, err = run_in_process(load_tool("model_info"), ["--family", "MlpMixer"], capsys)
    assert status == 0, err
    # the README's Mixer table, row for row
    assert "| b16 | 16 | 768 | 12 | 384 | 3072 | 196 | 59.1 M | 59,880,472 | 12.60 |" in out
    assert "| h14 | 14 | 1280 | 32 | 640 | 5120 | 256 | 431.1 M | 432,350,952 | 120.99 |" in out
    status, out, err = run_in_process(load_tool("model_info"), [], capsys)
    assert status == 0, err
    for family, archs in pm.list_variants().items():
        assert f"{family} (backbone: {{name: {family}, arch: ARCH}}):" in out
        assert all(f"\n| {arch} | " in out for arch in archs), family
    status, out, err = run_in_process(load_tool("model_info"), ["--family", "Mixer"], capsys)
    assert status == 2 and "unknown family Mixer: choose from" in err


def test_model_info_describes_a_config_of_any_family(tmp_path, capsys):
    tool = load_tool("model_info")
    for name, backbone in sorted(TINY_BACKBONES.items()):
        cfg = classifier_cfg(dict(backbone), 10, backbone["hidden_dim"])
        status, out, err = run_in_process(
            tool, ["-c", write_yaml(tmp_path / f"{name}.yaml", {"model": cfg})], capsys)
        assert status == 0, err
        _, total, gmacs = describe_classifier(pm.build_model(cfg))
        assert out.strip() == (f"ImageClassifier / {pm.BACKBONES.get(name).__name__}: 16 tokens "
                               f"of 32 channels, 2 blocks; {total:,} parameters ("
                               f"{total - 32 * 10 - 10:,} in the backbone); {gmacs:.3f} GMACs "
                               f"per 16x16 image"), name
    # an SSL model has no classes: its backbone's MACs
    ssl = os.path.join(ROOT, "configs", "demo", "mocov3_mixer_digits.yaml")
    status, out, err = run_in_process(tool, ["-c", ssl], capsys)
    assert status == 0 and out.startswith("MoCoV3 / MlpMixer: 16 tokens of 64 channels"), err
    assert out.strip().endswith("GMACs per 16x16 image through the backbone")
