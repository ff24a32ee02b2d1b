"""A quiet console: the library leaves OMP_NUM_THREADS alone, the tools set Paddle's math
threads without it (so Paddle's import prints no OMP warning) and print none of Paddle's or
ONNX Runtime's stray lines; the Predictor changes process-wide state only on request and may be
called from several threads."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT, TINY_BACKBONE, tiny_train_config, write_yaml
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.export import export_model
from passl_mixer.inference import Predictor
from test_export import random_weights, tiny_cfg

TINY = {"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
        "head": {"name": "LinearClsHead", "num_classes": 10, "in_channels": 32}}
NOISE = ("OMP_NUM_THREADS", "PLEASE USE", "ccache", "!!!!", "onnxruntime",
         "ReduceMeanCheckIfOneDNNSupport")


def python(code, omp=None, args=()):
    """Run ``python -c code`` from the repository with OMP_NUM_THREADS unset (or ``omp``)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)


def tool(args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, args[0]), *args[1:]], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_importing_passl_mixer_leaves_omp_num_threads_as_paddle_does():
    code = ("import os, sys; import {}; "
            "print(repr(os.environ.get('OMP_NUM_THREADS')))")
    for omp in (None, "1", "3"):
        alone = python(code.format("paddle"), omp).stdout.strip()
        ours = python(code.format("passl_mixer"), omp).stdout.strip()
        assert ours == alone  # Paddle's own import writes '1' when it is unset; we add nothing
        if omp is not None:
            assert ours == repr(omp)
    proc = python("import passl_mixer")
    assert not any(word in proc.stderr for word in NOISE), proc.stderr


def test_tools_choose_the_threads_without_the_environment():
    code = ("import sys; from passl_mixer.cli import set_threads, _threads_from_argv; "
            "print(set_threads(_threads_from_argv(sys.argv[1:])))")
    cores = len(os.sched_getaffinity(0))
    assert python(code).stdout.strip() == str(cores)
    assert python(code, args=["--threads", "1"]).stdout.strip() == "1"
    assert python(code, omp="1").stdout.strip() == "None"  # the environment's choice stands
    assert python(code, omp="1", args=["--threads", "2"]).stdout.strip() == "2"


def test_train_tool_prints_no_paddle_noise(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "t.yaml", tiny_train_config(tiny_data, str(tmp_path / "run"),
                                                            epochs=1, max_steps=2))
    proc = tool(["tools/train.py", "-c", cfg, "--print-config"])
    assert proc.stderr == ""
    proc = tool(["tools/train.py", "-c", cfg])
    assert not any(word in proc.stderr for word in NOISE), proc.stderr
    assert "done: 2 steps" in proc.stdout


def test_export_and_predict_tools_print_no_paddle_noise(tmp_path):
    pytest.importorskip("paddle2onnx")
    cfg = tiny_cfg(TINY)
    weights = str(tmp_path / "w.pdparams")
    save_weights(random_weights(cfg), weights)
    config = write_yaml(tmp_path / "c.yaml", cfg)
    proc = tool(["tools/export_model.py", "-c", config, "--weights", weights, "--output",
                 str(tmp_path / "export"), "--format", "onnx"], cwd=str(tmp_path))
    assert not any(word in proc.stderr for word in NOISE), proc.stderr
    image_dir = os.path.join(ROOT, "data", "digits", "val", "3")
    proc = tool(["tools/predict.py", "--model-dir", str(tmp_path / "export"), "--input",
                 image_dir])
    assert not any(word in proc.stderr for word in NOISE), proc.stderr
    assert all(json.loads(line)["topk"] for line in proc.stdout.splitlines())


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    cfg = tiny_cfg(TINY)
    weights = str(tmp / "w.pdparams")
    save_weights(random_weights(cfg), weights)
    export_model(cfg, str(tmp / "export"), weights=weights)
    return str(tmp / "export")


def test_two_threads_share_one_predictor(export_dir):
    predictor = Predictor(export_dir, batch_size=4)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 3, 16, 16), dtype=np.float32) for n in (3, 7)]
    expected = [predictor.run(x) for x in inputs]
    results, errors = {}, []

    def work(k):
        try:
            results[k] = [predictor.run(inputs[k]) for _ in range(25)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(2):
        for got in results[k]:
            np.testing.assert_array_equal(got, expected[k])


PROCESS_STATE = """
import os, sys
import numpy as np
import passl_mixer.inference as inf
p = inf.Predictor(sys.argv[1])
print("kept after default:", inf._kept_memory, flush=True)
q = inf.Predictor(sys.argv[1], keep_memory=True, quiet=True)
print("kept after opt-in:", inf._kept_memory, flush=True)
q.run(np.zeros((2, 3, 16, 16), np.float32))
print("end", flush=True)
"""


def test_predictor_changes_process_state_only_when_asked(export_dir):
    proc = python(PROCESS_STATE, args=[export_dir])
    # quiet=True: Paddle's first-run print is dropped, stdout holds only our lines
    assert proc.stdout.splitlines() == ["kept after default: False", "kept after opt-in: True",
                                        "end"]
    assert "ReduceMeanCheckIfOneDNNSupport" not in proc.stderr
