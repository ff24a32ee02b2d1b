"""The config schema: one mechanism (sections + constructor signatures) validates every key."""
import inspect
import typing

import pytest

from passl_mixer import registry as R
from passl_mixer.engine.trainer import validate_config
from passl_mixer.errors import ConfigError
from passl_mixer.registry import config_with_defaults
from passl_mixer.schema import (SECTIONS, PositiveInt, Section, check_call, section, tracking,
                                validate_section)

from conftest import tiny_train_config

REGISTRIES = [R.BACKBONES, R.NECKS, R.HEADS, R.MODELS, R.LOSSES, R.DATASETS, R.TRANSFORMS,
              R.OPTIMIZERS, R.LR_SCHEDULERS, R.LOGGERS]
# Arguments the caller passes itself, never config keys.
INJECTED = {"lr_scheduler", "output_dir"}


def registered_parts():
    return [(reg.name, name, reg.get(name)) for reg in REGISTRIES for name in reg.keys()]


@pytest.mark.parametrize("kind, name, target", registered_parts(),
                         ids=[f"{k}-{n}" for k, n, _ in registered_parts()])
def test_every_registered_part_annotates_every_argument(kind, name, target):
    """The signature is the schema of a part: an argument without a (checkable) annotation
    would be a config key that nothing validates."""
    func = target.__init__ if inspect.isclass(target) else target
    hints = typing.get_type_hints(func, include_extras=True)
    for p in inspect.signature(target).parameters.values():
        if p.name == "self" or p.name in INJECTED or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        assert p.name in hints, f"{kind} '{name}': argument '{p.name}' has no annotation"
        assert hints[p.name] is not typing.Any, f"{kind} '{name}': '{p.name}' is typed Any"


def test_every_section_field_has_help_text():
    assert {"train", "amp", "distributed", "data", "data.train", "data.val", "export"} <= set(
        SECTIONS)
    for path, schema in SECTIONS.items():
        for key, field in schema.model_fields.items():
            assert field.description, f"{path}.{key} has no description"


class Demo(Section):
    size: PositiveInt = 3


@pytest.mark.parametrize("value, expected", [
    ({"size": "four"}, "demo.size is 'four'"),
    ({"size": 0}, "demo.size is 0.*greater than 0"),
    ({"sise": 2}, "unknown key 'demo.sise'.*did you mean 'size'"),
    (0.5, "demo must be a mapping"),
])
def test_section_errors_name_the_key_and_the_value(value, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_section(Demo, value, "demo")


def test_section_defaults_fill_in():
    assert validate_section(Demo, None, "demo") == {"size": 3}


def test_registry_errors_name_the_full_path(tiny_classifier_cfg):
    cfg = {"model": tiny_classifier_cfg}
    cfg["model"]["backbone"]["num_blocks"] = "four"
    with tracking(cfg), pytest.raises(ConfigError, match=r"model\.backbone\.num_blocks is 'four'"):
        R.build_model(cfg["model"])


def test_check_call_answers_unknown_keys_with_the_accepted_ones():
    def part(width: PositiveInt = 2, depth: PositiveInt = 1):
        return width * depth

    with pytest.raises(ConfigError, match="unknown key.*x.part.widht.*did you mean 'width'.*"
                                          "Accepted keys: width, depth"):
        check_call(part, {"widht": 3}, "x.part")
    assert check_call(part, {"width": "3"}, "x.part") == {"width": 3}


def test_print_config_shows_every_default(tmp_path, tiny_data):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "out"))
    validate_config(cfg)
    full = config_with_defaults(cfg)
    assert full["train"]["keep_last"] == 3 and full["amp"]["dtype"] == "bfloat16"
    assert full["model"]["backbone"]["norm_eps"] == 1e-6            # from MlpMixer's signature
    assert full["data"]["train"]["num_workers"] == 0                # from the loader section
    assert full["data"]["val"]["transforms"][0]["interpolation"]    # from Resize's signature
    assert full["optimizer"]["lr"] == cfg["optimizer"]["lr"]         # given values are kept


def test_a_new_section_registers_itself():
    @section("demo.new")
    class New(Section):
        flag: bool = False

    try:
        assert SECTIONS["demo.new"] is New
    finally:
        del SECTIONS["demo.new"]
