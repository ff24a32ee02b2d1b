"""Evaluation without training, into its own folder; the pre-flight check of a run's inputs;
the warning when a run resumes a checkpoint written with other settings."""
import glob
import json
import os

import paddle
import pytest

from conftest import ROOT, load_tool, run_in_process, run_tool, tiny_train_config, write_yaml


TRAIN = load_tool("train")
EVAL = load_tool("eval")


def run_files(out):
    """Every file of a run except its eval/ folder, with its bytes."""
    files = {}
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        rel = os.path.relpath(path, out)
        if os.path.isfile(path) and not rel.startswith("eval" + os.sep):
            with open(path, "rb") as f:
                files[rel] = f.read()
    return files


@pytest.fixture
def trained(tiny_data, tmp_path, capsys):
    """A one-epoch tiny run in tmp_path/run; returns (config, config path, output dir)."""
    out = str(tmp_path / "run")
    cfg = tiny_train_config(tiny_data, out, epochs=1)
    path = write_yaml(tmp_path / "c.yaml", cfg)
    with paddle.utils.unique_name.guard():
        code, _, err = run_in_process(TRAIN, ["-c", path], capsys)
    assert code == 0, err
    return cfg, path, out


def test_eval_needs_only_model_val_and_weights_and_leaves_the_run_alone(trained, tmp_path,
                                                                         capsys):
    cfg, _, out = trained
    before = run_files(out)
    assert any(name.startswith("vdl" + os.sep) for name in before) and "train.log" in before
    # no data.train (its folder need not exist), no optimizer, no lr_scheduler
    eval_cfg = {"model": cfg["model"], "data": {"val": cfg["data"]["val"]},
                "train": {"output_dir": out}}
    path = write_yaml(tmp_path / "eval.yaml", eval_cfg)
    weights = os.path.join(out, "checkpoints", "best.pdckpt")
    code, stdout, err = run_in_process(EVAL, ["-c", path, "--weights", weights], capsys)
    assert code == 0, err
    where = os.path.join(out, "eval", "best")
    assert os.path.abspath(os.path.join(where, "eval.json")) in stdout  # says where
    metrics = json.load(open(os.path.join(where, "eval.json")))
    reported = json.load(open(os.path.join(out, "metrics.json")))[-1]
    assert metrics["top1"] == pytest.approx(reported["top1"])
    assert metrics["loss"] == pytest.approx(reported["loss"], rel=1e-5)
    assert "top1" in open(os.path.join(where, "eval.log")).read()
    assert run_files(out) == before  # vdl/ and train.log byte-identical, nothing added

    # --output DIR instead; -o weights=PATH is the same as --weights
    own = tmp_path / "elsewhere"
    code, _, err = run_in_process(EVAL, ["-c", path, "-o", f"weights={weights}",
                                         "--output", str(own)], capsys)
    assert code == 0, err
    assert json.load(open(own / "eval.json"))["top1"] == pytest.approx(metrics["top1"])
    assert run_files(out) == before


def test_eval_only_resume_evaluates_the_checkpoint_without_touching_the_run(trained, capsys):
    _, path, out = trained
    before = run_files(out)
    code, _, err = run_in_process(TRAIN, ["-c", path, "--eval-only", "--resume", "auto"], capsys)
    assert code == 0, err
    metrics = json.load(open(os.path.join(out, "eval", "latest", "eval.json")))
    assert metrics["num_samples"] == 24
    assert run_files(out) == before


def test_resuming_with_other_settings_warns(trained, capsys):
    _, path, out = trained
    with paddle.utils.unique_name.guard():  # the optimizer state's names as in a new process
        code, stdout, err = run_in_process(TRAIN, ["-c", path, "--resume", "auto",
                                                   "-o", "train.epochs=2"], capsys)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if "other settings" in line]
    assert len(lines) == 1 and "train.epochs 1 -> 2" in lines[0], stdout
    assert "world size" not in lines[0] and "global batch" not in lines[0]


def test_the_headline_command_without_imagenet_names_every_missing_input(tmp_path):
    proc = run_tool(["tools/train.py", "-c",
                     os.path.join(ROOT, "configs", "mlp_mixer", "mixer_b16_224.yaml"),
                     "-o", "model.pretrained=weights/none.pdparams"],
                    cwd=str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr[proc.stderr.index("error: "):].split())
    for needle in ("data.train.dataset.root is 'data/ILSVRC2012/train'",
                   f"resolved to '{tmp_path / 'data' / 'ILSVRC2012' / 'val'}'",
                   "data.val.dataset.root", "model.pretrained is 'weights/none.pdparams'",
                   "resolved against the working directory",
                   "-o data.train.dataset.root=PATH -o data.val.dataset.root=PATH",
                   "-o model.pretrained=PATH", 'README.md, section "Data"'):
        assert needle in message, f"{needle!r} not in: {message}"
    assert os.listdir(tmp_path) == []  # no output/ folder, no log


def test_eval_of_missing_inputs_checks_only_what_it_reads(tmp_path):
    proc = run_tool(["tools/eval.py", "-c",
                     os.path.join(ROOT, "configs", "mlp_mixer", "mixer_b16_224.yaml"),
                     "--weights", "weights/b16.pdparams"], cwd=str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr[proc.stderr.index("error: "):].split())
    assert "data.val.dataset.root" in message and "weights is 'weights/b16.pdparams'" in message
    assert "data.train" not in message  # evaluation does not read the training set
    assert os.listdir(tmp_path) == []


def test_evaluation_runs_under_the_configs_amp_settings(trained, tmp_path, monkeypatch):
    """As in training: the forward passes run under the config's auto_cast settings (here as
    on a GPU with bfloat16; on CPU Paddle ignores AMP and evaluation turns it off)."""
    from paddle.amp.auto_cast import amp_state

    from passl_mixer.engine import evaluation

    cfg, _, out = trained
    cfg = dict(cfg, amp={"enable": True, "dtype": "bfloat16", "level": "O1"})
    seen = []

    build = evaluation.build_model

    def build_and_watch(model_cfg):
        def record(layer, inputs):
            state = amp_state()
            seen.append(None if state is None else (state["enable"], state["dtype"],
                                                    state["level"]))
        model = build(model_cfg)
        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(evaluation, "build_model", build_and_watch)
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(evaluation, "check_amp_support", lambda dtype: None)
    result = evaluation.evaluate_config(cfg, weights=os.path.join(out, "checkpoints",
                                                                   "latest.pdckpt"),
                                        output_dir=str(tmp_path / "amp_eval"))
    assert result["num_samples"] == 24
    assert seen and set(seen) == {(True, "bfloat16", "O1")}


def test_the_inference_engine_gives_dygraphs_numbers(trained, tmp_path, capsys):
    """On a CPU tools/eval.py runs a traced Paddle Inference program (oneDNN) by default: the
    same top-1, top-5 and loss as dygraph, and the log says which engine ran."""
    _, path, out = trained
    weights = os.path.join(out, "checkpoints", "latest.pdckpt")
    results = {}
    for engine in ("dygraph", "inference", "auto"):
        where = str(tmp_path / engine)
        code, _, err = run_in_process(EVAL, ["-c", path, "--weights", weights, "--output", where,
                                             "--engine", engine], capsys)
        assert code == 0, err
        results[engine] = json.load(open(os.path.join(where, "eval.json")))
        expected = "dygraph" if engine == "dygraph" else "inference"
        assert f"process(es), {expected})" in open(os.path.join(where, "eval.log")).read()
    for engine in ("inference", "auto"):
        for key in ("top1", "top5", "num_samples"):
            assert results[engine][key] == results["dygraph"][key]
        assert results[engine]["loss"] == pytest.approx(results["dygraph"]["loss"], abs=1e-5)


def test_eval_only_with_a_missing_resume_path_names_it(tiny_data, tmp_path, capsys):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"))
    missing = str(tmp_path / "nowhere.pdckpt")
    code, _, err = run_in_process(TRAIN, ["-c", write_yaml(tmp_path / "c.yaml", cfg),
                                          "--eval-only", "--resume", missing], capsys)
    assert code == 2 and "Traceback" not in err, err
    message = " ".join(err.split())
    assert f"--resume is '{missing}', which does not exist" in message
    assert "--resume PATH" in message
    assert not os.path.exists(tmp_path / "run")
