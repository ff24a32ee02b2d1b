"""Files that are not what they claim, and faults while writing.

Every mistake here is made the way a user makes it -- a checkpoint given as the config, a
folder given as the weights, a file given as the output folder, a truncated export, a full
disk -- and run through the real tool (a subprocess of tools/*.py, real Paddle). Each must end
with exit status 2 and one ``error: ...`` paragraph naming the file and what was expected, never
a traceback; the write faults must also lose nothing and leave no temporary file behind.

A full disk is simulated with ``RLIMIT_FSIZE`` (SIGXFSZ ignored), which makes a write fail with
EFBIG exactly like the reported "OSError: [Errno 27] File too large"; a folder that cannot be
created with a regular file where its parent should be (we run as root, so permission bits do
not stop writes).
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, make_image_folder, run_tool, tiny_train_config, write_yaml

TIMEOUT = 180

# tools/*.py run with a file-size limit: writes past LIMIT bytes fail with EFBIG.
LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
tool = sys.argv[2]
sys.argv = [tool] + sys.argv[3:]
runpy.run_path(tool, run_name="__main__")
"""


def run(args, cwd=None, limit=None):
    """Run tools/<args[0]> (under a file-size limit of ``limit`` bytes if given)."""
    if limit is None:
        return run_tool(args, cwd=cwd, timeout=TIMEOUT, check=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", LIMITED, str(limit), os.path.join(ROOT, args[0]), *args[1:]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def error_of(proc, *needles):
    """The one-paragraph error of a failed tool run (unwrapped), checked: exit status 2, no
    traceback, and every one of ``needles`` in the message."""
    out = proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.returncode == 2, out
    assert "Traceback" not in proc.stderr, out
    assert "error: " in proc.stderr, out
    message = " ".join(proc.stderr[proc.stderr.index("error: "):].split())
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def temp_files(folder):
    """Leftovers of the atomic writers (``.<name>.<random>.tmp`` files or folders) anywhere
    under ``folder``."""
    found = []
    for dirpath, dirnames, names in os.walk(folder):
        found += [os.path.join(dirpath, n) for n in dirnames + names
                  if n.startswith(".") and (n.endswith(".tmp") or n.endswith(".old"))]
    return found


# -- shared files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One tiny trained run (config, checkpoint), its export and conversion, and the files a
    user gives by mistake."""
    tmp = tmp_path_factory.mktemp("bad_files")
    data = make_image_folder(str(tmp / "data"))
    run_dir = str(tmp / "run")
    cfg = write_yaml(tmp / "tiny.yaml", tiny_train_config(data, run_dir, epochs=1))
    proc = run_tool(["tools/train.py", "-c", cfg], timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = os.path.join(run_dir, "checkpoints", "latest.pdckpt")
    export = str(tmp / "export")
    proc = run_tool(["tools/export_model.py", "-c", cfg, "--weights", ckpt, "--output", export],
                    timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    converted = str(tmp / "converted")
    proc = run_tool(["tools/convert_checkpoint.py", "--src", ckpt, "--output", converted],
                    timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    png = str(tmp / "picture.png")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png)
    folder = tmp / "a_folder"
    folder.mkdir()
    text = tmp / "notes.txt"
    text.write_text("just some notes\n", encoding="utf-8")
    return {"tmp": tmp, "data": data, "cfg": cfg, "run": run_dir, "ckpt": ckpt,
            "export": export, "converted": converted, "png": png, "folder": str(folder),
            "text": str(text)}


def copy_export(files, tmp_path, damage=None):
    """A copy of the export; ``damage(dir)`` changes it."""
    model_dir = str(tmp_path / "model")
    shutil.copytree(files["export"], model_dir)
    if damage:
        damage(model_dir)
    return model_dir


def predict(model_dir, files):
    return run(["tools/predict.py", "--model-dir", model_dir, "--input", files["png"]])


# -- configs (-c) ---------------------------------------------------------------------------
def test_a_checkpoint_given_as_the_config(files):
    proc = run(["tools/train.py", "-c", files["ckpt"]])
    error_of(proc, f"Config file '{files['ckpt']}'", "Python pickle", "expected a YAML config file")


def test_an_image_given_as_the_config(files, tmp_path):
    proc = run(["tools/export_model.py", "-c", files["png"], "--output", str(tmp_path / "out")])
    error_of(proc, f"Config file '{files['png']}' is a PNG image", "expected a YAML config file")


def test_a_folder_given_as_the_config_points_at_the_config_inside(files):
    proc = run(["tools/train.py", "-c", files["run"]])
    error_of(proc, f"Config file '{files['run']}' is a directory", "expected a YAML config file",
             f"It holds '{os.path.join(files['run'], 'config.yaml')}'")


def test_an_empty_config(files, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    proc = run(["tools/train.py", "-c", str(empty)])
    error_of(proc, f"Config file '{empty}' is empty", "expected a YAML config file")


def test_a_config_that_is_not_a_mapping(files, tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n- data\n", encoding="utf-8")
    proc = run(["tools/train.py", "-c", str(listed)])
    error_of(proc, f"Config file '{listed}' holds a list", "mapping of sections")


def test_a_base_file_that_is_a_folder(files, tmp_path):
    (tmp_path / "base").mkdir()
    cfg = tmp_path / "child.yaml"
    cfg.write_text("_base_: [base]\n", encoding="utf-8")
    proc = run(["tools/train.py", "-c", str(cfg)])
    error_of(proc, "names _base_ file 'base'", f"'{tmp_path / 'base'}' is a directory",
             "expected a YAML config file")


# -- weights and checkpoints ----------------------------------------------------------------
def test_a_folder_given_as_weights_points_at_the_weights_inside(files, tmp_path):
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", files["converted"],
                "--output", str(tmp_path / "out")])
    error_of(proc, f"Weights file '{files['converted']}' is a directory",
             "expected a .pdckpt training checkpoint, .pdparams or .safetensors",
             f"It holds '{os.path.join(files['converted'], 'model.pdparams')}'")
    assert not os.path.exists(tmp_path / "out")


def test_a_folder_given_as_weights_override(files, tmp_path):
    proc = run(["tools/eval.py", "-c", files["cfg"], "-o", f"weights={files['folder']}",
                "-o", f"train.output_dir={tmp_path / 'eval'}"])
    error_of(proc, f"Weights file '{files['folder']}' is a directory",
             "expected a .pdckpt training checkpoint")
    assert not os.path.exists(tmp_path / "eval")  # no results folder for a failed evaluation


def test_a_folder_given_as_model_pretrained(files, tmp_path):
    proc = run(["tools/train.py", "-c", files["cfg"], "-o", f"model.pretrained={files['folder']}",
                "-o", f"train.output_dir={tmp_path / 'out'}"])
    error_of(proc, f"'{files['folder']}' is a directory", "expected an official Mixer .npz")


def test_a_folder_given_to_resume(files, tmp_path):
    proc = run(["tools/train.py", "-c", files["cfg"], "--resume", files["run"],
                "-o", f"train.output_dir={tmp_path / 'out'}"])
    error_of(proc, f"'{files['run']}' is a directory", "expected a .pdckpt training checkpoint",
             os.path.join(files["run"], "checkpoints", "latest.pdckpt"))


def test_a_yaml_file_named_pdparams(files, tmp_path):
    fake = tmp_path / "weights.pdparams"
    fake.write_text("model:\n  name: ImageClassifier\n", encoding="utf-8")
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", str(fake),
                "--output", str(tmp_path / "out")])
    error_of(proc, f"'{fake}'", "text file starting 'model:'", "expected a .pdckpt training "
             "checkpoint, .pdparams or .safetensors weights file")


def test_a_text_file_named_safetensors(files, tmp_path):
    fake = tmp_path / "weights.safetensors"
    fake.write_text("these are not tensors\n", encoding="utf-8")
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", str(fake),
                "--output", str(tmp_path / "out")])
    error_of(proc, f"Cannot read weights '{fake}' as safetensors", "text file starting",
             "expected a .pdckpt training checkpoint")


def test_an_image_given_as_weights(files, tmp_path):
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", files["png"],
                "--output", str(tmp_path / "out")])
    error_of(proc, f"Cannot read weights '{files['png']}': it is a PNG image",
             "expected a .pdckpt training checkpoint")


def test_an_empty_weights_file(files, tmp_path):
    empty = tmp_path / "cut.pdparams"
    empty.write_bytes(b"")
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", str(empty),
                "--output", str(tmp_path / "out")])
    error_of(proc, f"Weights file '{empty}' is empty (0 bytes)")


def test_an_npz_that_is_a_zip_of_something_else(files, tmp_path):
    import zipfile

    fake = tmp_path / "weights.npz"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("readme.txt", "hello")
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", str(fake),
                "--output", str(tmp_path / "out")])
    error_of(proc, f"Cannot read weights '{fake}': it is a zip archive",
             "tools/convert_checkpoint.py")
    proc = run(["tools/convert_checkpoint.py", "--src", str(fake), "--output",
                str(tmp_path / "conv")])
    error_of(proc, f"'{fake}' is not a Mixer checkpoint", "readme.txt")


# -- convert --------------------------------------------------------------------------------
def test_convert_a_folder_as_src(files, tmp_path):
    proc = run(["tools/convert_checkpoint.py", "--src", files["folder"], "--output",
                str(tmp_path / "conv")])
    error_of(proc, f"Checkpoint file '{files['folder']}' is a directory",
             "expected an official Mixer .npz")


def test_convert_to_an_existing_file(files):
    before = open(files["text"], "rb").read()
    proc = run(["tools/convert_checkpoint.py", "--src", files["ckpt"], "--output", files["text"]])
    error_of(proc, f"Output '{files['text']}' is a text file", "expected a directory")
    assert open(files["text"], "rb").read() == before


def test_convert_below_a_file(files):
    out = os.path.join(files["text"], "conv")
    proc = run(["tools/convert_checkpoint.py", "--src", files["ckpt"], "--output", out])
    error_of(proc, f"Output '{out}' cannot be created", f"'{files['text']}' is a text file")


# -- export ---------------------------------------------------------------------------------
def test_export_to_an_existing_file(files):
    before = open(files["text"], "rb").read()
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--output", files["text"]])
    error_of(proc, f"Output '{files['text']}' is a text file", "expected a directory to export")
    assert open(files["text"], "rb").read() == before


@pytest.mark.parametrize("kind", ["folder", "png"])
def test_export_class_names_that_are_not_a_text_file(files, tmp_path, kind):
    proc = run(["tools/export_model.py", "-c", files["cfg"], "-o",
                f"export.class_names={files[kind]}", "--output", str(tmp_path / "out")])
    what = "is a directory" if kind == "folder" else "is a PNG image, not text"
    error_of(proc, f"export.class_names file '{files[kind]}' {what}",
             "expected a text file with one class name per line")
    assert not os.path.exists(tmp_path / "out")


# -- data -----------------------------------------------------------------------------------
def image_list(files, tmp_path, **dataset):
    cfg = tiny_train_config(files["data"], str(tmp_path / "out"), epochs=1)
    lst = tmp_path / "train.txt"
    lst.write_text("class_0/000.png 0\nclass_1/000.png 1\n", encoding="utf-8")
    cfg["data"]["train"]["dataset"] = {"name": "ImageList",
                                       "root": os.path.join(files["data"], "train"),
                                       "list_file": str(lst), **dataset}
    return write_yaml(tmp_path / "list.yaml", cfg)


def test_an_image_given_as_the_list_file(files, tmp_path):
    proc = run(["tools/train.py", "-c", image_list(files, tmp_path, list_file=files["png"])])
    error_of(proc, f"ImageList list_file '{files['png']}' is a PNG image, not text",
             "expected a text file with one 'relative/path label' line per image")


def test_a_folder_given_as_the_list_file(files, tmp_path):
    proc = run(["tools/train.py", "-c", image_list(files, tmp_path, list_file=files["folder"])])
    error_of(proc, f"ImageList list_file '{files['folder']}' is a directory",
             "expected a text file with one 'relative/path label' line per image")


def test_a_folder_given_as_the_class_names_file(files, tmp_path):
    cfg = image_list(files, tmp_path, class_names_file=files["folder"])
    proc = run(["tools/train.py", "-c", cfg])
    error_of(proc, f"ImageList class_names_file '{files['folder']}' is a directory",
             "expected a text file with one class name per line")


def test_a_list_file_that_is_not_utf8(files, tmp_path):
    cfg = image_list(files, tmp_path)
    (tmp_path / "train.txt").write_bytes("class_0/000.png 0\nclass_1/caf\xe9.png 1\n"
                                         .encode("latin-1"))
    proc = run(["tools/train.py", "-c", cfg])
    error_of(proc, f"ImageList list_file '{tmp_path / 'train.txt'}' is not UTF-8 text",
             "line 2")


def test_a_file_given_as_the_dataset_root(files, tmp_path):
    proc = run(["tools/train.py", "-c", files["cfg"], "-o",
                f"data.train.dataset.root={files['text']}",
                "-o", f"train.output_dir={tmp_path / 'out'}"])
    error_of(proc, f"ImageFolder root '{files['text']}' is a text file",
             "expected a folder with one subfolder of images per class")


def test_a_file_given_as_the_image_list_root(files, tmp_path):
    cfg = image_list(files, tmp_path, root=files["text"])
    proc = run(["tools/train.py", "-c", cfg])
    error_of(proc, f"ImageList root '{files['text']}' is a text file", "not a directory",
             "relative to")


# -- predict --------------------------------------------------------------------------------
def test_predict_with_a_file_as_the_model_dir(files):
    proc = run(["tools/predict.py", "--model-dir", files["text"], "--input", files["png"]])
    error_of(proc, f"Model directory '{files['text']}' is a text file",
             "expected an export directory")


def truncate(name, keep=0.5):
    def damage(model_dir):
        path = os.path.join(model_dir, name)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[:int(len(data) * keep)])
    return damage


def test_predict_with_a_truncated_params_file(files, tmp_path):
    model_dir = copy_export(files, tmp_path, truncate("inference.pdiparams"))
    error_of(predict(model_dir, files), os.path.join(model_dir, "inference.pdiparams"),
             "is truncated or damaged", "Export again")


def test_predict_with_an_empty_params_file(files, tmp_path):
    model_dir = copy_export(files, tmp_path, truncate("inference.pdiparams", keep=0))
    error_of(predict(model_dir, files), os.path.join(model_dir, "inference.pdiparams"),
             "is empty (0 bytes)")


def test_predict_with_a_truncated_program(files, tmp_path):
    info = yaml.safe_load(open(os.path.join(files["export"], "inference.yml")))
    if not info["model_file"].endswith(".json"):
        pytest.skip("a Paddle 2.x export: the program is a .pdmodel")
    model_dir = copy_export(files, tmp_path, truncate("inference.json"))
    error_of(predict(model_dir, files), f"program file '{os.path.join(model_dir, 'inference.json')}'"
             " is truncated or damaged", "Export again")


def test_predict_with_garbage_as_inference_yml(files, tmp_path):
    def garbage(model_dir):
        with open(os.path.join(model_dir, "inference.yml"), "wb") as f:
            f.write(bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    model_dir = copy_export(files, tmp_path, garbage)
    error_of(predict(model_dir, files), f"'{os.path.join(model_dir, 'inference.yml')}' is a "
             "binary file", "expected the inference.yml tools/export_model.py writes")


def test_predict_with_a_damaged_inference_yml(files, tmp_path):
    def damaged(model_dir):
        path = os.path.join(model_dir, "inference.yml")
        info = yaml.safe_load(open(path))
        info["input"] = 5
        with open(path, "w") as f:
            yaml.safe_dump(info, f)
    model_dir = copy_export(files, tmp_path, damaged)
    error_of(predict(model_dir, files), f"'{os.path.join(model_dir, 'inference.yml')}' is "
             "damaged", "input.shape")


# -- faults while writing -------------------------------------------------------------------
WRITER = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (__LIMIT__, __LIMIT__))
import numpy as np
from passl_mixer import fileio
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.engine.checkpoint import save_checkpoint
from passl_mixer.errors import PasslMixerError
big = {"w": np.zeros(__LIMIT__, dtype=np.float32)}
target = sys.argv[1]
try:
    __KIND__
except PasslMixerError as exc:
    print(type(exc).__name__ + ": " + str(exc))
    sys.exit(2)
"""
WRITERS = {
    "write_text": "fileio.write_text(target, 'x' * 4 * __LIMIT__)",
    "save_checkpoint": "save_checkpoint({'model': big}, target)",
    "save_weights_safetensors": "save_weights(big, target)",
    "atomic_dir": ("with fileio.atomic_dir(target) as tmp:\n"
                   "        fileio.write_text(os.path.join(tmp, 'a.txt'), 'x' * 4 * __LIMIT__)"),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_full_disk_in_each_atomic_writer(tmp_path, kind):
    """Each writer, its write failing with EFBIG: a WriteError naming the file and the reason;
    the previous file untouched, no temporary file left."""
    limit = 20_000
    name = {"save_weights_safetensors": "w.safetensors", "atomic_dir": "folder"}.get(kind,
                                                                                   "out.bin")
    target = tmp_path / name
    if kind == "atomic_dir":
        target.mkdir()
        (target / "old.txt").write_text("previous", encoding="utf-8")
    else:
        target.write_bytes(b"previous")
    before = snapshot(tmp_path)
    script = WRITER.replace("__KIND__", WRITERS[kind]).replace("__LIMIT__", str(limit))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script, str(target)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("WriteError: Cannot write"), proc.stdout
    assert str(target) in proc.stdout and "File too large [EFBIG]" in proc.stdout
    assert snapshot(tmp_path) == before and temp_files(tmp_path) == []


def test_a_full_disk_during_a_training_checkpoint_keeps_the_previous_one(files, tmp_path):
    """The reported failure: a save fails with EFBIG. A first run writes epoch 1; resuming it
    under a file-size limit smaller than a checkpoint fails at the next save with one message,
    and every checkpoint of epoch 1 is byte-identical afterwards; a later resume continues."""
    out = str(tmp_path / "run")
    shutil.copytree(files["run"], out)
    cfg = tiny_train_config(files["data"], out, epochs=2)
    cfg_path = write_yaml(tmp_path / "c.yaml", cfg)
    cdir = os.path.join(out, "checkpoints")
    before = snapshot(cdir)
    limit = min(len(v) for v in before.values()) // 2
    proc = run(["tools/train.py", "-c", cfg_path, "--resume", "auto"], limit=limit)
    latest = os.path.join(cdir, "latest.pdckpt")
    error_of(proc, f"Cannot write checkpoint '{latest}'", "File too large [EFBIG]",
             "the previous 'latest.pdckpt' (if any) is unchanged")
    assert snapshot(cdir) == before
    assert temp_files(out) == []
    proc = run(["tools/train.py", "-c", cfg_path, "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr


def test_an_output_dir_below_a_regular_file(files, tmp_path):
    out = os.path.join(files["text"], "run")
    proc = run(["tools/train.py", "-c", files["cfg"], "-o", f"train.output_dir={out}"])
    error_of(proc, f"Cannot create train.output_dir '{out}'", f"'{files['text']}' is a text file",
             "not a directory")


@pytest.mark.parametrize("fmt", ["pdparams", "safetensors"])
def test_a_full_disk_during_conversion_keeps_the_previous_conversion(files, tmp_path, fmt):
    out = str(tmp_path / "conv")
    shutil.copytree(files["converted"], out)
    before = snapshot(tmp_path)
    proc = run(["tools/convert_checkpoint.py", "--src", files["ckpt"], "--output", out,
                "--format", fmt], limit=20_000)
    error_of(proc, f"Cannot write '{os.path.join(out, 'model.' + fmt)}'", "File too large [EFBIG]",
             "the previous 'conv' (if any) is unchanged")
    assert snapshot(tmp_path) == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("cut", ["program", "params"])
def test_a_full_disk_during_export_keeps_the_previous_export(files, tmp_path, cut):
    """paddle.jit.save does not report a failed write (it leaves the file short): export reads
    back what it wrote, so a short program or parameters file is the same clear error and the
    previous export stays."""
    info = yaml.safe_load(open(os.path.join(files["export"], "inference.yml")))
    program, params = (os.path.getsize(os.path.join(files["export"], info[k]))
                       for k in ("model_file", "params_file"))
    if cut == "program":
        limit, short = program // 2, info["model_file"]
    elif params > program:
        limit, short = (program + params) // 2, info["params_file"]
    else:
        pytest.skip("the program file is the larger one")
    out = copy_export(files, tmp_path)
    before = snapshot(tmp_path)
    proc = run(["tools/export_model.py", "-c", files["cfg"], "--weights", files["ckpt"],
                "--output", out], limit=limit)
    error_of(proc, f"Cannot write '{os.path.join(out, short)}'", "paddle.jit.save left it "
             "incomplete", f"it stopped at {limit:,} bytes", "the previous 'model' (if any) is "
             "unchanged")
    assert snapshot(tmp_path) == before and temp_files(tmp_path) == []
