import os
import tarfile

import numpy as np
import pytest
import scipy.io  # a test requirement (requirements/test.txt): the tool reads meta.mat with it
from PIL import Image

from conftest import load_tool
from passl_mixer.data import ImageFolder, ImageList
from passl_mixer.data.imagenet_val import prepare
from passl_mixer.errors import DataError

tool = load_tool("prepare_imagenet_val")  # only its main, run in-process

# ILSVRC2012_ID -> WNID, deliberately not in sorted-WNID order, plus a non-leaf synset (as in
# the real meta.mat) that must not become a class.
SYNSETS = [(1, "n03000003", 0), (2, "n01000001", 0), (3, "n02000002", 0), (4, "n00000000", 3)]
GROUND_TRUTH = [1, 2, 3, 1, 3, 3, 2]  # image i+1 has class ID GROUND_TRUTH[i]
SORTED_WNIDS = ["n01000001", "n02000002", "n03000003"]
LABELS = [SORTED_WNIDS.index(dict((i, w) for i, w, _ in SYNSETS)[g]) for g in GROUND_TRUTH]


def write_devkit(root):
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.zeros((len(SYNSETS), 1), dtype=fields)
    for row, (ilsvrc_id, wnid, children) in enumerate(SYNSETS):
        synsets[row, 0] = (ilsvrc_id, wnid, f"class {wnid}", children)
    scipy.io.savemat(str(data / "meta.mat"), {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{g}\n" for g in GROUND_TRUTH))
    return data.parent


def write_val_images(val_dir, count=len(GROUND_TRUTH)):
    val_dir.mkdir(exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((4, 5, 3), 30 * i, dtype=np.uint8)).save(
            val_dir / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=95)
    return val_dir


@pytest.fixture
def imagenet(tmp_path):
    return write_val_images(tmp_path / "val_raw"), write_devkit(tmp_path)


def image_index(path):
    return int(os.path.basename(path)[len("ILSVRC2012_val_"):-len(".JPEG")]) - 1


def test_folders_layout_with_symlinks_matches_sorted_wnid_labels(imagenet, tmp_path):
    val_dir, devkit = imagenet
    out = tmp_path / "val"
    counts = prepare(str(val_dir), str(devkit), str(out))
    assert counts == dict(images=7, placed=7, skipped=0, classes=3)
    ds = ImageFolder(out)
    assert ds.class_names == SORTED_WNIDS  # the non-leaf synset is not a class
    assert sorted((image_index(p), label) for p, label in ds.samples) == list(enumerate(LABELS))
    first = out / "n03000003" / "ILSVRC2012_val_00000001.JPEG"
    assert first.is_symlink() and os.path.isabs(os.readlink(first))
    assert (val_dir / "ILSVRC2012_val_00000001.JPEG").exists()


def test_list_layout_from_tarball_with_copies(imagenet, tmp_path):
    val_dir, devkit = imagenet
    tarball = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    out = tmp_path / "val_list_layout"
    prepare(str(val_dir), str(tarball), str(out), layout="list", link="copy")
    lines = (out / "val_list.txt").read_text().splitlines()
    assert lines == [f"ILSVRC2012_val_{i + 1:08d}.JPEG {label}" for i, label in enumerate(LABELS)]
    assert (out / "class_names.txt").read_text().split() == SORTED_WNIDS
    assert not (out / "ILSVRC2012_val_00000001.JPEG").is_symlink()
    ds = ImageList(out, out / "val_list.txt", class_names_file=out / "class_names.txt")
    assert [label for _, label in ds.samples] == LABELS and ds.num_classes == 3
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_list_layout_in_place_writes_only_the_list(imagenet):
    val_dir, devkit = imagenet
    before = sorted(os.listdir(val_dir))
    counts = prepare(str(val_dir), str(devkit), str(val_dir), layout="list", link="move")
    assert counts["placed"] == 0 and counts["skipped"] == 7
    assert sorted(os.listdir(val_dir)) == sorted(before + ["val_list.txt", "class_names.txt"])


def test_rerun_and_move_are_idempotent(imagenet, tmp_path):
    val_dir, devkit = imagenet
    out = tmp_path / "moved"
    assert prepare(str(val_dir), str(devkit), str(out), link="move")["placed"] == 7
    assert not list(val_dir.glob("*.JPEG"))  # all moved
    again = prepare(str(val_dir), str(devkit), str(out), link="move")
    assert again["placed"] == 0 and again["skipped"] == 7
    assert len(ImageFolder(out)) == 7


def test_resumes_after_an_interruption(imagenet, tmp_path):
    val_dir, devkit = imagenet
    out = tmp_path / "val"
    (out / "n03000003").mkdir(parents=True)
    (out / "n03000003" / "ILSVRC2012_val_00000001.JPEG.tmp").write_bytes(b"half a file")
    os.symlink(str(tmp_path / "gone.JPEG"), out / "n03000003" / "ILSVRC2012_val_00000004.JPEG")
    counts = prepare(str(val_dir), str(devkit), str(out))
    assert counts["placed"] == 7  # the broken link was replaced, the leftover .tmp overwritten
    assert len(ImageFolder(out)) == 7 and ImageFolder(out)[3][0].shape == (3, 4, 5)
    assert not list(out.rglob("*.tmp"))


def test_missing_images_fail_before_anything_is_written(imagenet, tmp_path):
    val_dir, devkit = imagenet
    os.remove(val_dir / "ILSVRC2012_val_00000005.JPEG")
    out = tmp_path / "val"
    with pytest.raises(DataError) as err:
        prepare(str(val_dir), str(devkit), str(out))
    assert "lists 7" in str(err.value) and "1 of them" in str(err.value)
    assert "ILSVRC2012_val_00000005.JPEG" in str(err.value)
    assert not out.exists()


def test_extra_images_mean_a_mismatched_devkit(imagenet, tmp_path):
    val_dir, devkit = imagenet
    write_val_images(val_dir, count=9)
    with pytest.raises(DataError, match="2 images the devkit"):
        prepare(str(val_dir), str(devkit), str(tmp_path / "val"))


def test_bad_devkit_inputs(imagenet, tmp_path):
    val_dir, devkit = imagenet
    os.remove(devkit / "data" / "ILSVRC2012_validation_ground_truth.txt")
    with pytest.raises(DataError, match="ILSVRC2012_validation_ground_truth.txt"):
        prepare(str(val_dir), str(devkit), str(tmp_path / "val"))
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n7\n")
    with pytest.raises(DataError, match=":2:"):
        prepare(str(val_dir), str(devkit), str(tmp_path / "val"))
    with pytest.raises(DataError, match="neither a folder nor a tar"):
        prepare(str(val_dir), str(tmp_path / "nothing.tar.gz"), str(tmp_path / "val"))


def test_cli_prints_errors_without_traceback(imagenet, tmp_path, capsys):
    val_dir, devkit = imagenet
    code = tool.main(["--val-dir", str(tmp_path / "missing"), "--devkit", str(devkit),
                      "--output", str(tmp_path / "val")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(tmp_path / "missing") in err
    assert tool.main(["--val-dir", str(val_dir), "--devkit", str(devkit), "--output",
                      str(tmp_path / "val"), "--layout", "list"]) == 0
    assert "7 validation images in 3 classes" in capsys.readouterr().out
