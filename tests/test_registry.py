import copy
import sys
import textwrap

import pytest

import passl_mixer as pm
from passl_mixer.errors import ConfigError, RegistryError
from passl_mixer.registry import Registry


def test_build_from_dict_does_not_mutate(tiny_classifier_cfg):
    before = copy.deepcopy(tiny_classifier_cfg)
    model = pm.build_model(tiny_classifier_cfg)
    assert tiny_classifier_cfg == before
    assert isinstance(model.backbone, pm.MlpMixer)
    assert isinstance(model.head, pm.LinearClsHead)


def test_build_backbone_and_head(tiny_backbone_cfg):
    b = pm.build_backbone(tiny_backbone_cfg)
    assert b.num_features == 32
    h = pm.build_head({"name": "LinearClsHead", "num_classes": 3, "in_channels": 32})
    assert h.num_classes == 3


def test_unknown_name_lists_registered_and_closest():
    with pytest.raises(RegistryError) as e:
        pm.build_backbone({"name": "MlpMixr"})
    msg = str(e.value)
    assert "Did you mean 'MlpMixer'" in msg
    assert "Registered names: FNet, GMLP, MlpMixer, ResMLP" in msg


def test_unknown_keyword_names_class_key_and_accepted(tiny_backbone_cfg):
    tiny_backbone_cfg["drop_pth_rate"] = 0.1
    with pytest.raises(ConfigError) as e:
        pm.build_backbone(tiny_backbone_cfg)
    msg = str(e.value)
    assert "MlpMixer" in msg and "'drop_pth_rate'" in msg and "did you mean 'drop_path_rate'" in msg
    assert "Accepted keys:" in msg and "hidden_dim" in msg


def test_missing_keyword_and_missing_name():
    with pytest.raises(ConfigError, match="missing required key.*'in_channels'"):
        pm.build_head({"name": "LinearClsHead", "num_classes": 3})
    with pytest.raises(ConfigError, match="needs a 'name' key"):
        pm.build_head({"num_classes": 3})


def test_register_twice_is_an_error_unless_forced():
    reg = Registry("thing")

    @reg.register()
    class A:
        pass

    class B:
        pass

    with pytest.raises(RegistryError, match="already registered"):
        reg.register(B, name="A")
    reg.register(B, name="A", force=True)
    assert reg.get("A") is B
    assert "A" in reg and len(reg) == 1
    other = Registry("other")
    assert other.register(A) is A  # the PASSL v1 form register(obj)
    assert other.get("A") is A


def test_entry_point_plugin_adds_a_backbone(tmp_path, monkeypatch):
    """A real (tiny) package with a passl_mixer.plugins entry point, found on sys.path."""
    pkg = tmp_path / "tiny_mixer_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import paddle.nn as nn
        from passl_mixer import BACKBONES

        @BACKBONES.register()
        class PluginBackbone(nn.Layer):
            def __init__(self, width=4):
                super().__init__()
                self.num_features = width
                self.fc = nn.Linear(3, width)

            def forward(self, x):
                return self.fc(x)
    """))
    dist = tmp_path / "tiny_mixer_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-mixer-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[passl_mixer.plugins]\ntiny = tiny_mixer_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "PluginBackbone" not in pm.BACKBONES
    try:
        b = pm.build_backbone({"name": "PluginBackbone", "width": 6})  # lookup loads plugins
        assert b.num_features == 6
    finally:
        pm.BACKBONES._entries.pop("PluginBackbone", None)
        sys.modules.pop("tiny_mixer_plugin", None)


def test_build_rejects_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        pm.build_backbone(["MlpMixer"])
