"""Predictor and tools/predict.py on real Paddle Inference: equality with the dygraph model,
bf16 bound, batch-size independence, input kinds, the evaluation preprocessing, errors, and
predict.py's top-1 on the demo validation set equal to tools/eval.py's."""
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

import passl_mixer as pm
from conftest import TINY_BACKBONE
from passl_mixer.data import ImageFolder
from passl_mixer.checkpoints.weights import load_weights, save_weights, set_weights
from passl_mixer.errors import CheckpointError, ConfigError, DataError, ShapeError
from passl_mixer.export import export_model
from passl_mixer.inference import Predictor, cpu_has_bf16
from test_export import DIGITS_VAL, ROOT, VAL_TRANSFORMS, random_weights, tiny_cfg

TINY = {"name": "ImageClassifier", "backbone": dict(TINY_BACKBONE),
        "head": {"name": "LinearClsHead", "num_classes": 10, "in_channels": 32}}
# bf16 keeps 8 significant bits; through the tiny Mixer the logits move by about 0.3% of their
# largest magnitude (measured 0.2-0.4%), so 1% is the bound.
BF16_REL_BOUND = 1e-2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(export dir, the dygraph model with the same random weights, weights file)."""
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny_cfg(TINY)
    weights = str(tmp / "w.pdparams")
    save_weights(random_weights(cfg), weights)
    model = pm.build_model(cfg["model"])
    set_weights(model, load_weights(weights))
    model.eval()
    export_model(cfg, str(tmp / "export"), weights=weights)
    return str(tmp / "export"), model, weights


def val_images(n):
    dataset = ImageFolder(DIGITS_VAL)
    step = len(dataset.samples) // n
    return [path for path, _ in dataset.samples[::step][:n]]


def test_fp32_predictor_equals_the_dygraph_model(tiny):
    model_dir, model, _ = tiny
    x = np.random.default_rng(0).standard_normal((11, 3, 16, 16), dtype=np.float32)
    predictor = Predictor(model_dir)
    assert predictor.precision == "fp32"
    want = model(paddle.to_tensor(x)).numpy()
    assert np.abs(predictor.run(x) - want).max() <= 1e-5


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions "
                                               "(avx512_bf16 / amx_bf16)")
def test_bf16_predictor_is_within_the_stated_bound(tiny):
    model_dir, model, _ = tiny
    x = np.random.default_rng(0).standard_normal((11, 3, 16, 16), dtype=np.float32)
    predictor = Predictor(model_dir, precision="bf16")
    assert predictor.precision == "bf16"
    want = model(paddle.to_tensor(x)).numpy()
    got = predictor.run(x)
    assert np.abs(got - want).max() <= BF16_REL_BOUND * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def test_bf16_falls_back_to_fp32_and_says_so_where_the_cpu_lacks_it(tiny, monkeypatch, caplog):
    model_dir, _, _ = tiny
    monkeypatch.setattr("passl_mixer.inference.cpu_has_bf16", lambda: False)
    caplog.set_level("WARNING", logger="passl_mixer")
    logger = logging.getLogger("passl_mixer")
    monkeypatch.setattr(logger, "propagate", True)  # let caplog see the package's logger
    assert Predictor(model_dir, precision="bf16").precision == "fp32"
    assert "no bf16 instructions" in caplog.text


def test_batch_sizes_1_7_32_give_the_same_per_image_results(tiny):
    model_dir, _, _ = tiny
    images = val_images(40)
    results = [Predictor(model_dir, batch_size=bs).predict(images) for bs in (1, 7, 32)]
    for other in results[1:]:
        assert np.abs(other - results[0]).max() <= 1e-5
        assert (other.argmax(1) == results[0].argmax(1)).all()


def test_paths_pil_images_and_uint8_arrays_get_the_evaluation_preprocessing(tiny):
    model_dir, _, _ = tiny
    predictor = Predictor(model_dir)
    dataset = ImageFolder(DIGITS_VAL, transforms=VAL_TRANSFORMS)
    path, _ = dataset.samples[5]
    from_eval = dataset[5][0]
    gray = np.asarray(Image.open(path).convert("L"))
    for image in (path, Image.open(path), gray, np.stack([gray] * 3, axis=-1), gray[..., None]):
        assert np.array_equal(predictor.preprocess(image), from_eval)
    batch = predictor.predict([path, Image.open(path), gray])
    assert np.abs(batch - batch[0]).max() == 0
    assert predictor.predict(path).shape == (1, 10)  # one image, not a list


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    model_dir, _, _ = tiny
    predictor = Predictor(model_dir)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="Cannot read image '.*broken.png'"):
        predictor.predict([str(broken)])
    with pytest.raises(DataError, match="uint8"):
        predictor.predict(np.zeros((16, 16, 3), dtype=np.float32))
    assert predictor.predict(Image.new("RGB", (64, 32))).shape == (1, 10)  # [16, 16]: stretched
    with pytest.raises(ShapeError, match="Predictor.run takes float32"):
        predictor.run(np.zeros((2, 3, 8, 8), dtype=np.float32))

    # Export refuses a short-side Resize without a crop (test_export.py); an inference.yml that
    # holds one anyway (edited by hand, or written before that check) still fails clearly on a
    # non-square image, since the aspect ratio is kept.
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    with open(edited / "inference.yml", encoding="utf-8") as f:
        info = yaml.safe_load(f)
    info["preprocess"] = [{"name": "Resize", "size": 16}, {"name": "Normalize"}]
    with open(edited / "inference.yml", "w", encoding="utf-8") as f:
        yaml.safe_dump(info, f)
    with pytest.raises(ShapeError, match=r"shape \[3, 16, 32\], but the model takes \[3, 16, 16\]"):
        Predictor(str(edited)).predict(Image.new("RGB", (64, 32)))


def test_missing_or_incomplete_model_dirs_are_clear_errors(tiny, tmp_path):
    model_dir, _, _ = tiny
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="holds no inference.yml"):
        Predictor(str(tmp_path))
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    os.remove(partial / "inference.pdiparams")
    with pytest.raises(CheckpointError, match="incomplete: inference.pdiparams"):
        Predictor(str(partial))


def test_device_and_precision_checks(tiny):
    model_dir, _, _ = tiny
    with pytest.raises(ConfigError, match="'fp16' is for GPUs"):
        Predictor(model_dir, precision="fp16")
    with pytest.raises(ConfigError, match="Unknown precision"):
        Predictor(model_dir, precision="int4")
    with pytest.raises(ConfigError, match="TensorRT runs on GPUs only"):
        Predictor(model_dir, tensorrt=True)
    if not paddle.is_compiled_with_cuda():
        with pytest.raises(ConfigError, match="CUDA build of Paddle"):
            Predictor(model_dir, device="gpu")


def test_topk_scores_are_probabilities_with_or_without_softmax_in_the_graph(tiny, tmp_path):
    model_dir, _, weights = tiny
    cfg = tiny_cfg(TINY)
    export_model(cfg, str(tmp_path / "soft"), weights=weights, softmax=True)
    logits_predictor, soft_predictor = Predictor(model_dir), Predictor(str(tmp_path / "soft"))
    images = val_images(3)
    probs = soft_predictor.predict(images)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    top_soft = soft_predictor.topk(probs, k=3)
    top_logits = logits_predictor.topk(logits_predictor.predict(images), k=3)
    for a, b in zip(top_soft, top_logits):
        assert [t["label"] for t in a] == [t["label"] for t in b]
        assert np.allclose([t["score"] for t in a], [t["score"] for t in b], atol=1e-5)
    assert set(top_soft[0][0]) == {"label", "class_name", "score"}
    assert top_soft[0][0]["class_name"] == str(top_soft[0][0]["label"])


# -- the command-line tools ------------------------------------------------------------------
def test_classify_files_batches_and_skips_unreadable_images(tiny, tmp_path):
    model_dir, _, _ = tiny
    images = val_images(3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    files = [images[0], str(broken), images[1], images[2]]
    predictor = Predictor(model_dir, batch_size=2)
    batches = list(predictor.classify_files(files, k=2))
    assert [end for end, _, _ in batches] == [2, 4]
    assert [path for _, results, _ in batches for path, _ in results] == images
    (skipped, exc), = batches[0][2]
    assert skipped == str(broken) and isinstance(exc, DataError) and not batches[1][2]
    expected = predictor.topk(predictor.predict(images), k=2)
    assert [top for _, results, _ in batches for _, top in results] == expected


def run_tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def json_lines(stdout):
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line is JSON


def test_predict_cli_top1_equals_eval_top1_on_the_demo_val_set(tmp_path):
    demo = "configs/demo/mixer_digits.yaml"
    run = tmp_path / "run"
    proc = run_tool("tools/train.py", "-c", demo, "-o", "train.epochs=2",
                    "-o", f"train.output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = str(run / "checkpoints" / "best.pdckpt")
    proc = run_tool("tools/eval.py", "-c", demo, "--weights", ckpt,
                    "--output", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "eval" / "eval.json", encoding="utf-8") as f:
        eval_top1 = json.load(f)["top1"]
    proc = run_tool("tools/export_model.py", "-c", demo, "--weights", ckpt,
                    "--output", str(tmp_path / "export"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_tool("tools/predict.py", "--model-dir", str(tmp_path / "export"),
                    "--input", "data/digits/val", "--topk", "3", "--batch-size", "50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = json_lines(proc.stdout)
    assert len(lines) == 359
    assert all(len(line["topk"]) == 3 for line in lines)
    hits = [line["topk"][0]["class_name"] == os.path.basename(os.path.dirname(line["file"]))
            for line in lines]
    predict_top1 = 100.0 * sum(hits) / len(hits)
    assert 20.0 < eval_top1  # two epochs learn something, so the comparison means something
    assert predict_top1 == pytest.approx(eval_top1, abs=1e-9)


def test_predict_cli_skips_unreadable_images_and_reports_bad_model_dirs(tiny, tmp_path):
    model_dir, _, _ = tiny
    folder = tmp_path / "images" / "sub"
    folder.mkdir(parents=True)
    for path in val_images(2):
        shutil.copy(path, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / ".hidden.png").write_bytes(b"ignored")
    proc = run_tool("tools/predict.py", "--model-dir", model_dir, "--input",
                    str(tmp_path / "images"), "--topk", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = json_lines(proc.stdout)
    assert len(lines) == 2 and "broken.png" not in proc.stdout
    assert "skipped" in proc.stderr and "broken.png" in proc.stderr
    assert "2 image(s) classified, 1 skipped" in proc.stderr

    proc = run_tool("tools/predict.py", "--model-dir", str(tmp_path / "images"), "--input",
                    str(folder))
    assert proc.returncode == 2
    assert "holds no inference.yml" in proc.stderr and "Traceback" not in proc.stderr


KEEP_MEMORY_PROBE = """
import os, numpy as np
from passl_mixer.inference import keep_freed_memory

def rss_growth_after_a_freed_block():
    pages = lambda: int(open("/proc/self/statm").read().split()[1])
    before = pages()
    block = np.ones(200 * 2 ** 20 // 8)  # 200 MB, written, so resident
    del block
    return (pages() - before) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

print(round(rss_growth_after_a_freed_block()), keep_freed_memory(),
      round(rss_growth_after_a_freed_block()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt, /proc")
def test_keep_freed_memory_keeps_a_freed_block_for_reuse():
    """By default glibc returns a freed 200 MB block to the OS at once (mmap); after
    keep_freed_memory() the process keeps it, so the next large allocation (the next op's
    output, in a predictor) needs no fresh pages. Run in its own process: it is one-way."""
    out = subprocess.run([sys.executable, "-c", KEEP_MEMORY_PROBE], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    default_growth, applied, kept_growth = int(out[0]), out[1] == "True", int(out[2])
    assert applied
    assert default_growth < 20 and kept_growth > 180, out
