"""passl_mixer.models.info: parameter and MAC accounting (tools/model_info.py prints it)."""
import paddle

import passl_mixer as pm
from conftest import TINY_BACKBONE
from passl_mixer.models.info import classifier_macs, count_parameters, describe_classifier


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
