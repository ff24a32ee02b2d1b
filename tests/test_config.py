import textwrap

import pytest

from passl_mixer.config import load_config
from passl_mixer.errors import ConfigError


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def cfg_files(tmp_path):
    (tmp_path / "_base_").mkdir()
    write(tmp_path / "_base_" / "model.yaml", """
        model:
          name: ImageClassifier
          backbone: {name: MlpMixer, arch: b16, drop_path_rate: 0.1}
          head: {name: LinearClsHead, num_classes: 1000, in_channels: 768}
        data:
          train:
            transforms: [{name: A, size: 224}, {name: B}]
    """)
    write(tmp_path / "_base_" / "sched.yaml", """
        optimizer: {name: AdamW, lr: 0.001, weight_decay: 0.05}
        model:
          backbone: {drop_path_rate: 0.2}
    """)
    return write(tmp_path / "exp.yaml", """
        _base_: [_base_/model.yaml, _base_/sched.yaml]
        optimizer: {lr: 0.003}
        data:
          train:
            transforms: [{name: C}]
    """)


def test_base_merge_later_wins_and_lists_replaced(cfg_files):
    cfg = load_config(cfg_files)
    assert cfg["model"]["backbone"] == {"name": "MlpMixer", "arch": "b16", "drop_path_rate": 0.2}
    assert cfg["optimizer"] == {"name": "AdamW", "lr": 0.003, "weight_decay": 0.05}
    assert cfg["data"]["train"]["transforms"] == [{"name": "C"}]
    assert "_base_" not in cfg


def test_overrides_are_yaml_scalars_index_lists_and_add_keys(cfg_files):
    cfg = load_config(cfg_files, [
        "optimizer.lr=1e-4", "model.backbone.arch=s16", "data.train.transforms.0.size=32",
        "train.epochs=3", "model.backbone.use_recompute=true", "data.mean=[0.5, 0.5, 0.5]",
        "optimizer.name=__import__('os').system('echo hi')"])
    assert cfg["optimizer"]["lr"] == 1e-4
    assert cfg["model"]["backbone"]["arch"] == "s16"
    assert cfg["data"]["train"]["transforms"][0] == {"name": "C", "size": 32}
    assert cfg["train"] == {"epochs": 3}
    assert cfg["model"]["backbone"]["use_recompute"] is True
    assert cfg["data"]["mean"] == [0.5, 0.5, 0.5]
    assert cfg["optimizer"]["name"] == "__import__('os').system('echo hi')"  # a string, not run


@pytest.mark.parametrize("override,match", [
    ("optimizer.lr", "expected KEY=VALUE"),
    ("optimizer..lr=1", "empty key part"),
    ("data.train.transforms.x=1", "must be an integer index"),
    ("data.train.transforms.5.size=1", "out of range"),
    ("optimizer.lr.x=1", "has no key 'x'"),
    ("optimizer.lr=[1, 2", "not a valid YAML"),
])
def test_malformed_overrides_name_the_key(cfg_files, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cfg_files, [override])


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    f = write(tmp_path / "a.yaml", "_base_: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(f)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = write(tmp_path / "bad.yaml", "model:\n  name: x\n  backbone: {name: y\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line \d+"):
        load_config(f)


def test_unsafe_yaml_tags_are_refused(tmp_path):
    f = write(tmp_path / "evil.yaml", "x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(f)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_delete_replaces_instead_of_merging(tmp_path):
    write(tmp_path / "base.yaml", "optimizer: {name: AdamW, lr: 1, weight_decay: 0.05}\n")
    f = write(tmp_path / "exp.yaml",
              "_base_: base.yaml\noptimizer: {_delete_: true, name: SGD, lr: 0.1}\n")
    assert load_config(f)["optimizer"] == {"name": "SGD", "lr": 0.1}
