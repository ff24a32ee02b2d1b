"""tools/gpu_check.py (passl_mixer/benchmarks/gpu_check.py) on a machine without a GPU: the
one-line "No GPU" exit; the comparisons, tolerances and table on real numbers; the plan on a
simulated GPU; and the plan run for real on the CPU (fp32 Trainer steps in a child process, a
2-process gloo launch, export + CPU predictor parity), so the code the GPU check runs is
exercised here, not only its skip. What needs a GPU (AMP modes, NCCL, GPU and TensorRT
predictors) cannot run here."""
import json
import math
import os

import numpy as np
import paddle
import pytest

from conftest import load_tool, run_in_process, run_tool
from passl_mixer.benchmarks import gpu_check as gc

CPU_ONLY = not paddle.device.is_compiled_with_cuda()


@pytest.mark.skipif(not CPU_ONLY, reason="this Paddle build has CUDA: the check would run")
def test_without_a_gpu_the_tool_says_so_in_one_line_and_exits_0():
    proc = run_tool(["tools/gpu_check.py"])
    assert proc.returncode == 0
    assert proc.stdout.strip() == (
        f"No GPU: this Paddle build is CPU-only (paddle {paddle.__version__}); the GPU check "
        f"needs paddlepaddle-gpu and a visible GPU.")
    assert "Traceback" not in proc.stderr


# -- comparisons on real numbers ------------------------------------------------------------------
def _weights(rng):
    return {"a.weight": rng.standard_normal((4, 3)).astype("float32"),
            "a.bias": rng.standard_normal(3).astype("float32")}


def test_training_comparison_measures_loss_weights_and_the_update_error():
    rng = np.random.default_rng(0)
    init = _weights(rng)
    update = {k: 0.01 * rng.standard_normal(v.shape).astype("float32") for k, v in init.items()}
    ref = {k: init[k] + update[k] for k in init}
    ref_losses = [2.30, 2.25, 2.20]
    tol = gc.TOLERANCES["O1 fp16"]

    same = gc.compare_training(ref_losses, ref, init, list(ref_losses), dict(ref), tol)
    assert same == {"status": "PASS", "reason": "", "max_dloss": 0.0, "max_dweight": 0.0,
                    "update_error": 0.0}

    # 2% of the update off, losses 0.004 off: within fp16's bounds, with the exact figures
    off = {k: ref[k] + 0.02 * update[k] for k in ref}
    near = gc.compare_training(ref_losses, ref, init, [2.30, 2.254, 2.199], off, tol)
    assert near["status"] == "PASS"
    assert near["max_dloss"] == pytest.approx(0.004)
    assert near["update_error"] == pytest.approx(0.02, rel=1e-3)
    assert near["max_dweight"] == pytest.approx(
        max(float(np.abs(0.02 * u).max()) for u in update.values()), rel=1e-3)

    # a step zeroed (e.g. an overflowed float16 clip norm): the weights never moved
    zeroed = gc.compare_training(ref_losses, ref, init, list(ref_losses), dict(init), tol)
    assert zeroed["status"] == "FAIL" and zeroed["update_error"] == pytest.approx(1.0)
    assert "Δupdate 1 > 0.05" in zeroed["reason"]

    # a loss curve off by more than the bound: named with both numbers
    drift = gc.compare_training(ref_losses, ref, init, [2.30, 2.28, 2.26], dict(ref), tol)
    assert drift["status"] == "FAIL" and drift["reason"] == "max Δloss 0.06 > 0.02"

    diverged = gc.compare_training(ref_losses, ref, init, [2.3, math.nan, math.nan], ref, tol)
    assert diverged["status"] == "FAIL" and "loss not finite" in diverged["reason"]
    inf_weights = dict(ref, **{"a.bias": np.full(3, np.inf, "float32")})
    bad = gc.compare_training(ref_losses, ref, init, ref_losses, inf_weights, tol)
    assert bad == {"status": "FAIL", "reason": "weight a.bias not finite"}


def test_o2_update_is_measured_from_the_rounded_start():
    """O2 starts from the weights rounded to bfloat16: that rounding (here as large as the
    whole update) is not an update error; the steps themselves are compared."""
    rng = np.random.default_rng(2)
    init = {"w": rng.standard_normal((64, 64)).astype("float32")}
    start = {"w": paddle.to_tensor(init["w"]).astype("bfloat16").astype("float32").numpy()}
    update = {"w": 2e-3 * rng.standard_normal((64, 64)).astype("float32")}
    ref = {"w": init["w"] + update["w"]}
    final = {"w": start["w"] + update["w"]}
    tol = gc.TOLERANCES["O2 bf16"]
    fair = gc.compare_training([1.0], ref, init, [1.0], final, tol, start)
    assert fair["status"] == "PASS" and fair["update_error"] < 1e-4
    assert fair["max_dweight"] == pytest.approx(float(np.abs(start["w"] - init["w"]).max()))
    unfair = gc.compare_training([1.0], ref, init, [1.0], final, tol)
    assert unfair["status"] == "FAIL" and unfair["update_error"] > 0.15


def test_bf16_bounds_are_wider_than_fp16_and_every_mode_has_one():
    assert set(gc.MODES) - {"fp32"} <= set(gc.TOLERANCES)
    for level in ("O1", "O2"):
        fp16, bf16 = gc.TOLERANCES[f"{level} fp16"], gc.TOLERANCES[f"{level} bf16"]
        assert bf16.loss > fp16.loss and bf16.update > fp16.update
    assert gc.TOLERANCES["O2 bf16"].describe() == "max Δloss <= 0.05, Δupdate <= 0.15"


def test_predictor_comparison_is_relative_to_the_largest_output():
    ref = np.array([[10.0, -20.0, 5.0]])
    tol = gc.Tolerance(output=5e-3)
    ok = gc.compare_outputs(ref, ref + np.array([[0.05, 0.0, 0.0]]), tol)
    assert ok["status"] == "PASS" and ok["max_doutput"] == pytest.approx(0.05 / 20)
    small = np.array([[0.1, -0.2]])  # below 1: the bound is absolute
    assert gc.compare_outputs(small, small + 0.004, tol)["status"] == "PASS"
    far = gc.compare_outputs(small, small + 0.006, tol)
    assert far["status"] == "FAIL" and far["reason"] == "max Δout 0.006 > 0.005"
    assert gc.compare_outputs(small, small[:, :1], tol)["status"] == "FAIL"


def test_amp_that_silently_ran_float32_fails(tmp_path):
    """Paddle turns AMP off without a word on a device without the dtype: identical numbers
    must not pass as a working O2 bf16."""
    rng = np.random.default_rng(1)
    init = _weights(rng)
    ref = {"losses": [1.0, 0.9], "weights": {k: v + 0.01 for k, v in init.items()}, "init": init}
    out = str(tmp_path / "run")

    def run(**fields):
        np.savez(out + ".npz", **ref["weights"])
        base = {"out": out, "losses": [1.0, 0.9], "img_per_s": 100.0, "peak_memory_mb": 512.0,
                "memory_kind": "GPU", "amp_enabled": True, "compute_dtype": "bfloat16",
                "param_dtypes": ["bfloat16", "float32"], "scaler_skipped_steps": 0}
        return dict(base, **fields)

    amp = gc.MODES["O2 bf16"]
    row = gc.CheckResult("tiny", "train O2 bf16")
    gc.judge_run(row, run(), ref, gc.TOLERANCES["O2 bf16"], amp)
    assert (row.status, row.reason, row.update_error, row.peak_memory_mb) == ("PASS", "", 0.0, 512)
    assert not os.path.exists(out + ".npz")  # removed once compared (240 MB for B/16)

    row = gc.CheckResult("tiny", "train O2 bf16")
    gc.judge_run(row, run(compute_dtype="float32", param_dtypes=["float32"]), ref,
                 gc.TOLERANCES["O2 bf16"], amp)
    assert row.status == "FAIL"
    assert "AMP did not take effect: the first Linear computed in float32, not bfloat16" \
        in row.reason and "O2 left no bfloat16 weights" in row.reason

    row = gc.CheckResult("tiny", "train O1 fp16")
    gc.judge_run(row, run(compute_dtype="float16", scaler_skipped_steps=1), ref,
                 gc.TOLERANCES["O1 fp16"], gc.MODES["O1 fp16"])
    assert row.status == "PASS" and "the loss scaler skipped 1 step(s)" in row.reason


def test_o2_weights_are_read_from_the_optimizers_float32_master_weights():
    """Under O2 the model holds bfloat16 weights; the update is compared on the optimizer's
    float32 master copy (found by the parameter's name), the weights Paddle really updates."""
    from paddle.amp.auto_cast import amp_initialize

    from conftest import TINY_BACKBONE
    from passl_mixer.registry import build_model

    model = build_model({"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
                         "head": {"name": "LinearClsHead", "num_classes": 10, "in_channels": 32}})
    exact = {k: p.numpy() + 1e-4 for k, p in model.named_parameters()}
    # what paddle.amp.decorate(level='O2') does to the weights on a GPU
    amp_initialize(models=[model], dtype="bfloat16", excluded_layers=None)
    half = [(k, p) for k, p in model.named_parameters() if p.dtype == paddle.bfloat16]
    assert half

    class Optimizer:  # Paddle's optimizers keep _master_weights = {param.name: float32 tensor}
        _master_weights = {p.name: paddle.to_tensor(exact[k]) for k, p in half}

    weights = gc.float32_weights(model, Optimizer())
    assert all(w.dtype == np.float32 for w in weights.values())
    for k, _ in half:
        np.testing.assert_array_equal(weights[k], exact[k])
    rounded = gc.float32_weights(model, object())  # no master weights: the bf16 values
    k = half[0][0]
    assert 0 < np.abs(rounded[k] - exact[k]).max() < 1e-2


def test_the_compute_dtype_probe_sees_the_mixer_compute():
    """The token-mixing MLP uses its Linear layers' weights without calling them: the probe
    must still see a Linear run (else every AMP mode would fail as 'did not take effect')."""
    from conftest import TINY_BACKBONE
    from passl_mixer.registry import build_model

    model = build_model({"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
                         "head": {"name": "LinearClsHead", "num_classes": 10, "in_channels": 32}})
    seen = gc.compute_dtype_probe(model)
    assert seen == []
    model(paddle.randn([2, 3, 16, 16]))
    model(paddle.randn([2, 3, 16, 16]))
    assert seen == ["float32"]


# -- the plan -------------------------------------------------------------------------------------
def test_plan_on_a_gpu_without_bf16_skips_bf16_with_the_reason():
    t4 = {"bfloat16": "this GPU (Tesla T4, compute capability 7.5; bfloat16 AMP needs 8.0 or "
                      "newer)"}
    checks = gc.plan(["s16", "b16"], device="gpu", data_parallel=True, amp_support=t4.get)
    s16 = [(c.check, c.skip) for c in checks if c.model == "s16"]
    assert [c for c, _ in s16] == [
        "train fp32", "train O1 fp16", "train O1 bf16", "train O2 fp16", "train O2 bf16",
        "data parallel fp32", "predictor fp32", "predictor fp16", "tensorrt fp32",
        "tensorrt fp16"]
    skipped = {c: s for c, s in s16 if s}
    assert skipped == {"train O1 bf16": t4["bfloat16"], "train O2 bf16": t4["bfloat16"]}
    assert len(checks) == 2 * len(s16)
    one_gpu = gc.plan(["s16"], ["fp32", "O2 fp16"], device="gpu", amp_support=lambda d: None)
    assert [c.check for c in one_gpu][:2] == ["train fp32", "train O2 fp16"]
    assert not [c for c in one_gpu if c.kind == "data_parallel"]


def test_every_mode_is_a_valid_training_config(tmp_path):
    """The runs' configs pass the Trainer's own validation (the AMP ones run only on a GPU)."""
    from passl_mixer.engine.trainer import validate_config

    for mode, amp in gc.MODES.items():
        cfg = gc._train_config(gc.model_config("b16"), str(tmp_path), str(tmp_path / "run"), 16,
                               6, str(tmp_path / "w.pdparams"), amp)
        sections = validate_config(cfg)
        assert sections["amp"]["enable"] is (amp is not None)
        assert sections["train"]["loggers"] == [] and sections["train"]["max_steps"] == 6
        if amp and amp["dtype"] == "float16":
            assert sections["amp"]["init_loss_scaling"] == gc.INIT_LOSS_SCALING
    assert gc.model_config("b16")["backbone"]["drop_path_rate"] == 0.0


def test_plan_on_a_cpu_skips_amp_and_tensorrt():
    checks = gc.plan(["tiny"], device="cpu", data_parallel=True)
    skip = {c.check: c.skip for c in checks}
    assert [c.check for c in checks] == [
        "train fp32", "train O1 fp16", "train O1 bf16", "train O2 fp16", "train O2 bf16",
        "2 processes fp32 (gloo)", "predictor fp32", "predictor fp16", "tensorrt fp32",
        "tensorrt fp16"]
    assert [c for c, s in skip.items() if not s] == [
        "train fp32", "2 processes fp32 (gloo)", "predictor fp32"]
    assert skip["train O1 fp16"].startswith("a GPU mode (on a CPU only bfloat16 O1")
    assert skip["tensorrt fp32"] == skip["tensorrt fp16"] == "TensorRT runs on GPUs only"
    assert skip["predictor fp16"] == "fp16 predictors run on GPUs only"


def test_amp_support_reason_is_the_trainers_own_check(monkeypatch):
    """bf16 on a compute-capability 7.5 GPU, simulated: check_amp_support's refusal becomes the
    SKIP reason (fp16 passes there)."""
    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda device=None: False)
    monkeypatch.setattr(paddle.amp, "is_float16_supported", lambda device=None: True)
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert gc.amp_support_reason("bfloat16", "gpu:0") == \
        "this GPU (Tesla T4, compute capability 7.5; bfloat16 AMP needs 8.0 or newer)"
    assert gc.amp_support_reason("float16", "gpu:0") is None


def test_table_rows_line_up_and_say_why():
    rows = [gc.CheckResult("b16", "train fp32", img_per_s=412.345, peak_memory_mb=9876.4,
                           memory_kind="GPU", reason="reference; loss 6.9 -> 6.1 in 6 steps"),
            gc.CheckResult("b16", "train O2 fp16", "FAIL", "Δupdate 0.3 > 0.05", 801.0, 5120.0,
                           "GPU", 0.0123, 0.00456, 0.3),
            gc.CheckResult("b16", "train O2 bf16", "SKIP", "this GPU (T4, ...) cannot"),
            gc.CheckResult("tiny", "predictor fp32", img_per_s=5000.0, max_doutput=4.4e-8),
            gc.CheckResult("tiny", "train fp32", peak_memory_mb=332.0, memory_kind="RSS")]
    lines = gc.format_table(rows).splitlines()
    assert lines[0].startswith("| model  | check ") and lines[0].endswith("| result | why")
    width = len(lines[0]) - len(" why")
    assert all(line[:width].endswith("|") for line in lines)
    assert [c.strip() for c in lines[2][:width].split("|")[1:-1]] == [
        "b16", "train fp32", "412.3", "9876", "-", "-", "-", "-", "PASS"]
    assert [len(c) for c in lines[2][:width].split("|")] == \
        [len(c) for c in lines[0][:width].split("|")]
    assert lines[2][width:] == " reference; loss 6.9 -> 6.1 in 6 steps"
    assert "1.23e-02" in lines[3] and "4.56e-03" in lines[3] and "3.00e-01" in lines[3]
    assert lines[3].endswith("|   FAIL | Δupdate 0.3 > 0.05")
    assert lines[4].endswith("|   SKIP | this GPU (T4, ...) cannot")
    assert "4.40e-08" in lines[5] and "332 RSS" in lines[6]
    tolerances = gc.format_tolerances([gc.CheckResult("b16", "train O2 fp16", tolerance="x")])
    assert tolerances.splitlines()[1] == "  train O2 fp16: x"


# -- the plan run for real on this CPU ------------------------------------------------------------
def test_the_check_runs_for_real_on_the_cpu(tmp_path, capsys):
    """tools/gpu_check.py --device cpu: the fp32 reference through the real Trainer in a child
    process, the same steps on 2 gloo processes under paddle.distributed.launch (half the
    global batch each), export + the CPU predictor against the dygraph outputs; AMP and
    TensorRT skipped with the reason. Exit 0 and the JSON results."""
    out = str(tmp_path / "gpu_check.json")
    code, stdout, stderr = run_in_process(
        load_tool("gpu_check"), ["--device", "cpu", "--models", "tiny", "--modes",
                                 "fp32,O2 bf16", "--steps", "3", "--data-parallel", "on",
                                 "--json", out, "--threads", "1"], capsys)
    assert code == 0, stdout + stderr
    with open(out) as f:
        report = json.load(f)
    assert report["passed"] is True and report["device"] == "cpu"
    rows = {r["check"]: r for r in report["results"]}
    ref = rows["train fp32"]
    assert ref["status"] == "PASS" and len(ref["losses"]) == 3
    assert ref["losses"][-1] < ref["losses"][0]  # SGD on one fixed batch: the loss goes down
    assert ref["img_per_s"] > 0 and ref["peak_memory_mb"] > 0 and ref["memory_kind"] == "RSS"
    assert ref["compute_dtype"] == "float32"  # the probe saw a Linear run (AMP modes need it)
    assert rows["train O2 bf16"]["status"] == "SKIP"
    dp = rows["2 processes fp32 (gloo)"]
    assert dp["status"] == "PASS", dp["reason"]
    assert dp["max_dloss"] < 1e-5 and dp["update_error"] < 1e-4, dp
    assert dp["reason"] == "global batch 32 = 2 x 16, vs 1 x 32"
    pred = rows["predictor fp32"]
    assert pred["status"] == "PASS" and pred["max_doutput"] < 1e-5 and pred["img_per_s"] > 0
    assert [r["status"] for r in report["results"]] == [
        "PASS", "SKIP", "PASS", "PASS", "SKIP", "SKIP", "SKIP"]
    assert "| tiny   | train fp32 " in stdout and "tolerances (" in stdout
    assert "3 passed, 4 skipped, 0 failed" in stdout


def test_a_failing_child_is_a_fail_row_with_its_error(tmp_path):
    """A run that dies (here: a predictor on an export directory that does not exist) is
    reported with the child's error line, and the check goes on."""
    said = []
    runner = gc._Runner(str(tmp_path), "cpu", 1, echo=said.append)
    reference = str(tmp_path / "reference.npz")
    np.savez(reference, images=np.zeros((2, 3, 16, 16), "float32"), ref=np.zeros((2, 10)))
    with pytest.raises(RuntimeError) as exc:
        runner.run("predictor", "bad", export_dir=str(tmp_path / "missing"),
                   reference=reference, precision="fp32", tensorrt=False)
    assert exc.value.args[0].startswith("exit status 1: ")
    assert "CheckpointError" in exc.value.args[0] and "missing" in exc.value.args[0]
    # the end of the run's output (its traceback) is shown as it fails
    assert said[0] == "  bad ..." and said[1].startswith("  bad: FAILED (exit status 1); its "
                                                         "output ends:\n    ")
    assert "Traceback" in said[1] or "CheckpointError" in said[1]


def test_unknown_models_and_modes_are_config_errors():
    from passl_mixer.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown model 'b61'.*tiny, s32"):
        gc.run_checks(["b61"], device="cpu")
    with pytest.raises(ConfigError, match="Unknown mode.*O3 fp8"):
        gc.plan(["tiny"], ["fp32", "O3 fp8"], device="cpu")
