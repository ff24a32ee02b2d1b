"""Config mistakes and run protection, tried as a user makes them, through tools/train.py.

Each config mistake runs ``tools/train.py``'s own ``main`` under the same ``cli.run`` that the
command line uses (in this process, so that the many cases take seconds): it must exit with
status 2 and print one ``error: ...`` paragraph naming the key by its full path and the value,
never a traceback, and write nothing into the output dir. One case runs the real command in a
subprocess as well. Then: a new run never replaces another run's checkpoints, ``--overwrite``
moves them aside, ``--resume auto`` says which checkpoint it cannot read, and ``--eval-only``
without weights refuses.
"""
import copy
import glob
import os

import pytest

from conftest import (TINY_CLASSES, load_tool, run_in_process, run_tool, tiny_train_config,
                      write_yaml)


TRAIN = load_tool("train")
EVAL = load_tool("eval")


def error_message(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    message = " ".join(err[err.index("error: "):].split())
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


def set_key(cfg, dotted, value):
    node = cfg
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# (key, bad value, what the message must hold besides the key)
MISTAKES = [
    ("model.backbone.num_blocks", "four", ["'four'", "integer"]),
    ("model.backbone.hidden_dim", [1, 2], ["[1, 2]", "integer"]),
    ("model.backbone.drop_path_rate", 1.5, ["1.5", "less than 1"]),
    ("model.backbone.num_blok", 2, ["unknown key", "did you mean 'num_blocks'"]),
    ("model.head.loss", {"label_smoothing": 0.1}, ["needs a 'name' key", "CrossEntropyLoss"]),
    ("model.head.loss", {"name": "CrossEntropyLoss", "label_smoothing": -0.1}, ["-0.1"]),
    ("optimizer.lr", "abc", ["'abc'"]),
    ("optimizer.lr", {"a": 1}, ["{'a': 1}"]),
    ("optimizer.weight_decay", "lots", ["'lots'"]),
    ("lr_scheduler.warmup_steps", -3, ["-3"]),
    ("train.epochs", "ten", ["'ten'", "integer"]),
    ("train.epochs", -1, ["-1", "greater than 0"]),
    ("train.log_interval", "often", ["'often'"]),
    ("train.ema", 0.5, ["0.5"]),
    ("train.ema.decay", 1.5, ["1.5", "less than 1"]),
    ("train.epoch", 3, ["unknown key", "did you mean 'epochs'"]),
    ("data.mixup", {"mixup_alph": 0.2}, ["unknown key", "did you mean 'mixup_alpha'"]),
    ("data.mixup.prob", 2, ["2", "less than or equal to 1"]),
    ("data.train.batch_size", 0, ["0", "greater than 0"]),
    ("data.train.num_workers", -1, ["-1"]),
    ("data.train.shufle", True, ["unknown key", "did you mean 'shuffle'"]),
    ("data.train.transforms", [{"name": "RandomResizedCrop", "size": 16, "scale": "big"}],
     ["data.train.transforms[0].scale", "'big'"]),
    ("data.train.transforms", [{"name": "RandomResizedCrop", "size": 16}, {"name": "Normalise"}],
     ["data.train.transforms[1].name", "Did you mean 'Normalize'"]),
    ("data.val.batch_size", "five", ["'five'"]),
    ("amp.level", "O3", ["'O3'", "O1", "O2"]),
    ("distributed.sync_bn", "maybe", ["'maybe'"]),
    ("trian", {"epochs": 1}, ["unknown key", "did you mean 'train'"]),
]


@pytest.mark.parametrize("key, value, needles", MISTAKES,
                         ids=[f"{k}={v!r}" for k, v, _ in MISTAKES])
def test_a_bad_config_value_names_its_key(key, value, needles, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = tiny_train_config(tiny_data, str(out))
    if key.startswith("data.mixup"):
        cfg["data"]["mixup"] = {}
    set_key(cfg, key, copy.deepcopy(value))
    code, _, err = run_in_process(TRAIN, ["-c", write_yaml(tmp_path / "c.yaml", cfg),
                                       "-o", "train.max_steps=1"], capsys)
    error_message(code, err, key, *needles)
    assert not glob.glob(str(out / "checkpoints" / "*")), "a bad config must write no checkpoint"


@pytest.mark.parametrize("override, needles", [
    ("train.epochs=ten", ["train.epochs", "'ten'"]),
    ("model.backbone.drop_path_rate=1.5", ["model.backbone.drop_path_rate", "1.5"]),
])
def test_an_override_mistake_is_named_on_the_command_line(override, needles, tiny_data, tmp_path):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "out"))
    proc = run_tool(["tools/train.py", "-c", write_yaml(tmp_path / "c.yaml", cfg),
                     "-o", override], check=False, timeout=120)
    error_message(proc.returncode, proc.stderr, *needles)


def test_head_smaller_than_the_dataset_is_refused_before_training(tiny_data, tmp_path, capsys):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "out"))
    cfg["model"]["head"]["num_classes"] = 2
    code, _, err = run_in_process(TRAIN, ["-c", write_yaml(tmp_path / "c.yaml", cfg)], capsys)
    error_message(code, err, "model.head.num_classes is 2", f"has {TINY_CLASSES} classes",
                  os.path.join(tiny_data, "train"))


def test_print_config_lists_the_defaults(tiny_data, tmp_path, capsys):
    from passl_mixer.cli import run

    cfg = tiny_train_config(tiny_data, str(tmp_path / "out"))
    with pytest.raises(SystemExit) as exit_info:
        run(TRAIN.main, ["-c", write_yaml(tmp_path / "c.yaml", cfg), "--print-config"])
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "keep_last: 3" in printed and "norm_eps: 1.0e-06" in printed
    assert not os.path.exists(tmp_path / "out")


# -- never lose a run ------------------------------------------------------------------------
@pytest.fixture
def finished_run(tiny_data, tmp_path, capsys):
    """A one-step run in tmp_path/out; returns (config path, output dir)."""
    out = str(tmp_path / "out")
    cfg = tiny_train_config(tiny_data, out, epochs=1, max_steps=1)
    config = write_yaml(tmp_path / "c.yaml", cfg)
    code, _, err = run_in_process(TRAIN, ["-c", config], capsys)
    assert code == 0, err
    assert os.path.isfile(os.path.join(out, "checkpoints", "latest.pdckpt"))
    return config, out


def snapshot(out):
    return {p: open(p, "rb").read() for p in glob.glob(os.path.join(out, "checkpoints", "*"))}


def test_a_new_run_refuses_a_folder_holding_another_run(finished_run, capsys):
    config, out = finished_run
    before = snapshot(out)
    code, _, err = run_in_process(TRAIN, ["-c", config, "-o", "model.backbone.num_blocks=1"],
                               capsys)
    error_message(code, err, out, "latest.pdckpt", "--resume auto", "train.output_dir",
                  "--overwrite")
    assert snapshot(out) == before


def test_overwrite_moves_the_old_run_aside(finished_run, capsys):
    config, out = finished_run
    before = snapshot(out)
    code, _, err = run_in_process(TRAIN, ["-c", config, "--overwrite"], capsys)
    assert code == 0, err
    aside = glob.glob(os.path.join(out, "replaced_*"))
    assert len(aside) == 1 and "moved the previous run's files" in err
    for path, data in before.items():
        kept = os.path.join(aside[0], "checkpoints", os.path.basename(path))
        assert open(kept, "rb").read() == data
    assert os.path.isfile(os.path.join(out, "checkpoints", "latest.pdckpt"))


def test_resume_auto_names_the_checkpoint_it_cannot_read(finished_run, capsys):
    config, out = finished_run
    latest = os.path.join(out, "checkpoints", "latest.pdckpt")
    for path in glob.glob(os.path.join(out, "checkpoints", "*.pdckpt")):
        with open(path, "r+b") as f:
            f.truncate(100)
    before = snapshot(out)
    code, _, err = run_in_process(TRAIN, ["-c", config, "--resume", "auto"], capsys)
    error_message(code, err, "--resume auto", latest, "nothing was written")
    assert snapshot(out) == before


def test_resume_auto_continues_the_run(finished_run, capsys):
    config, out = finished_run
    code, _, err = run_in_process(TRAIN, ["-c", config, "--resume", "auto",
                                       "-o", "train.max_steps=2"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("args", [["--eval-only"], ["--eval-only", "--resume", "auto"]])
def test_eval_only_without_weights_refuses(args, tiny_data, tmp_path, capsys):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "fresh"))
    config = write_yaml(tmp_path / "c.yaml", cfg)
    code, _, err = run_in_process(TRAIN, ["-c", config, *args], capsys)
    error_message(code, err, "Nothing to evaluate", "weights=PATH")


def test_eval_tool_without_weights_refuses(tiny_data, tmp_path, capsys):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "fresh"))
    code, _, err = run_in_process(EVAL, ["-c", write_yaml(tmp_path / "c.yaml", cfg)], capsys)
    error_message(code, err, "Nothing to evaluate")


def test_eval_only_of_a_finished_run_needs_no_overwrite(finished_run, capsys):
    config, out = finished_run
    before = snapshot(out)
    code, _, err = run_in_process(TRAIN, ["-c", config, "--eval-only", "--resume", "auto"], capsys)
    assert code == 0, err
    assert snapshot(out) == before
    assert os.path.isfile(os.path.join(out, "eval", "latest", "eval.json"))
