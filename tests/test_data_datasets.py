import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from passl_mixer.data import ImageFolder, ImageList, list_images, to_rgb
from passl_mixer.errors import DataError
from passl_mixer.registry import DATASETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUGMENT = [dict(name="RandomResizedCrop", size=12), dict(name="RandomHorizontalFlip"),
           dict(name="RandAugment", magnitude=9), dict(name="Normalize"),
           dict(name="RandomErasing", prob=0.5)]


def rgb_array(seed, height=20, width=24):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path, img, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kwargs)
    return str(path)


def make_folder(root, per_class=3, classes=("cat", "dog")):
    for c, name in enumerate(classes):
        for i in range(per_class):
            save(root / name / f"{i}.png", Image.fromarray(rgb_array(10 * c + i)))
    return root


def odd_mode_images():
    """One image per color layout a real dataset may contain."""
    rgb = Image.fromarray(rgb_array(0))
    palette_t = rgb.convert("P")
    palette_t.info["transparency"] = 0
    return {
        "gray_L.png": rgb.convert("L"),
        "gray16.png": Image.fromarray((rgb_array(1)[..., 0].astype(np.uint16) * 257)),
        "gray_I.tiff": Image.fromarray(rgb_array(2)[..., 0].astype(np.int32) * 1000),
        "gray_F.tiff": Image.fromarray(rgb_array(3)[..., 0].astype(np.float32) / 255),
        "cmyk.jpg": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P"),
        "palette_transparent.png": palette_t,
        "gray_alpha_LA.png": rgb.convert("LA"),
        "rgba.png": rgb.convert("RGBA"),
        "bilevel.bmp": rgb.convert("1"),
    }


def test_datasets_are_registered():
    assert "ImageFolder" in DATASETS and "ImageList" in DATASETS


def test_image_folder_classes_samples_and_case_insensitive_extensions(tmp_path):
    make_folder(tmp_path)
    save(tmp_path / "dog" / "upper.JPEG", Image.fromarray(rgb_array(7)))
    save(tmp_path / "dog" / "nested" / "deep.Png", Image.fromarray(rgb_array(8)))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    save(tmp_path / "dog" / ".hidden.png", Image.fromarray(rgb_array(9)))
    ds = ImageFolder(tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 8
    assert [label for _, label in ds.samples] == [0, 0, 0, 1, 1, 1, 1, 1]
    names = {os.path.basename(p) for p, _ in ds.samples}
    assert {"upper.JPEG", "deep.Png"} <= names and "notes.txt" not in names
    assert ".hidden.png" not in names


def test_samples_are_float_chw_with_int64_labels(tmp_path):
    ds = ImageFolder(make_folder(tmp_path), transforms=AUGMENT)
    img, label = ds[4]
    assert img.shape == (3, 12, 12) and img.dtype == np.float32
    assert isinstance(label, np.int64) and label == 1
    raw, _ = ImageFolder(tmp_path)[0]  # no transforms: raw 0..255 values
    assert raw.shape == (3, 20, 24) and raw.dtype == np.float32
    assert np.array_equal(raw, rgb_array(0).transpose(2, 0, 1).astype(np.float32))


def test_every_color_mode_becomes_rgb(tmp_path):
    for name, img in odd_mode_images().items():
        save(tmp_path / "c" / name, img)
    ds = ImageFolder(tmp_path, transforms=[dict(name="Normalize")])
    assert len(ds) == len(odd_mode_images())
    for i, (path, _) in enumerate(ds.samples):
        img, _ = ds[i]
        assert img.shape == (3, 20, 24) and img.dtype == np.float32, path
        assert -1.0 <= img.min() and img.max() <= 1.0
    assert ds.num_skipped == 0


def test_high_bit_depth_and_alpha_conversions():
    sixteen = to_rgb(Image.fromarray(np.array([[0, 257 * 128, 65535]], dtype=np.uint16)))
    assert np.asarray(sixteen)[0, :, 0].tolist() == [0, 128, 255]
    floats = to_rgb(Image.fromarray(np.array([[2.0, 3.0, 4.0]], dtype=np.float32)))
    assert np.asarray(floats)[0, :, 0].tolist() == [0, 128, 255]
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 1] = [10, 20, 30, 255]  # pixel 0 fully transparent (black underneath), 1 opaque
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert out[0].tolist() == [[255, 255, 255], [10, 20, 30]]


def test_image_list_reads_paths_with_spaces_comments_and_blank_lines(tmp_path):
    images = tmp_path / "images"
    save(images / "a b" / "first image.png", Image.fromarray(rgb_array(0)))
    save(images / "second.png", Image.fromarray(rgb_array(1)))
    list_file = tmp_path / "train_list.txt"
    list_file.write_text("# path label\n\na b/first image.png 3\n  second.png\t1  \n\n")
    names_file = tmp_path / "names.txt"
    names_file.write_text("zero\none\ntwo\nthree\n")
    ds = ImageList(images, list_file, transforms=[dict(name="Normalize")],
                   class_names_file=names_file)
    assert [label for _, label in ds.samples] == [3, 1]
    assert ds.class_names == ["zero", "one", "two", "three"] and ds.num_classes == 4
    img, label = ds[0]
    assert img.shape == (3, 20, 24) and label == 3
    assert ImageList(images, list_file).class_names is None
    assert ImageList(images, list_file).num_classes == 4


def test_image_list_missing_entries_name_file_lines_and_count(tmp_path):
    save(tmp_path / "ok.png", Image.fromarray(rgb_array(0)))
    list_file = tmp_path / "val_list.txt"
    list_file.write_text("ok.png 0\ngone1.png 1\nok.png 0\ngone2.png 1\n")
    with pytest.raises(DataError) as err:
        ImageList(tmp_path, list_file)
    message = str(err.value)
    assert str(list_file) in message and "2 of the 4 entries" in message
    assert "line 2: 'gone1.png'" in message and "line 4: 'gone2.png'" in message


@pytest.mark.parametrize("line", ["ok.png cat", "ok.png -1", "ok.png"])
def test_image_list_bad_label_names_file_and_line(tmp_path, line):
    save(tmp_path / "ok.png", Image.fromarray(rgb_array(0)))
    list_file = tmp_path / "list.txt"
    list_file.write_text(f"ok.png 0\n{line}\n")
    with pytest.raises(DataError, match=rf"{list_file}:2:"):
        ImageList(tmp_path, list_file)


def test_image_list_class_names_file_too_short(tmp_path):
    save(tmp_path / "ok.png", Image.fromarray(rgb_array(0)))
    (tmp_path / "list.txt").write_text("ok.png 2\n")
    (tmp_path / "names.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="names.txt"):
        ImageList(tmp_path, tmp_path / "list.txt", class_names_file=tmp_path / "names.txt")


def test_missing_or_empty_inputs_fail_in_the_constructor(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=str(missing)):
        ImageFolder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=str(empty)):
        ImageFolder(empty)
    flat = tmp_path / "flat"
    save(flat / "x.png", Image.fromarray(rgb_array(0)))
    with pytest.raises(DataError, match="1 images directly"):
        ImageFolder(flat)
    no_images = tmp_path / "no_images"
    (no_images / "cls").mkdir(parents=True)
    (no_images / "cls" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=str(no_images)):
        ImageFolder(no_images)
    with pytest.raises(DataError, match=str(missing)):
        ImageList(tmp_path, missing)
    with pytest.raises(DataError, match=str(missing)):
        ImageList(missing, tmp_path / "x.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="empty.txt"):
        ImageList(tmp_path, tmp_path / "empty.txt")


def test_corrupt_images_are_skipped_with_a_warning_and_counted(tmp_path, caplog):
    good = Image.fromarray(rgb_array(0))
    save(tmp_path / "a" / "0_good.png", good)
    garbage = tmp_path / "a" / "1_garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG at all" * 10)
    buffer = io.BytesIO()
    Image.fromarray(rgb_array(1, 64, 64)).save(buffer, format="JPEG", quality=90)
    truncated = tmp_path / "a" / "2_truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    save(tmp_path / "a" / "3_good.png", Image.fromarray(rgb_array(3)))
    ds = ImageFolder(tmp_path)

    with caplog.at_level(logging.WARNING, logger="passl_mixer.data"):
        img, _ = ds[1]
    assert np.array_equal(img, rgb_array(3).transpose(2, 0, 1))  # the next readable sample
    assert ds.num_skipped == 2
    logged = caplog.text
    assert str(garbage) in logged and str(truncated) in logged


def test_all_unreadable_raises_data_error(tmp_path):
    for i in range(3):
        path = tmp_path / "a" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"garbage")
    ds = ImageFolder(tmp_path)
    with pytest.raises(DataError, match="could be read"):
        ds[0]
    assert ds.num_skipped == 3


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    make_folder(tmp_path)
    a = ImageFolder(tmp_path, transforms=AUGMENT, seed=7)
    b = ImageFolder(tmp_path, transforms=AUGMENT, seed=7)
    b[3]  # reading other samples first must not matter
    for ds in (a, b):
        ds.set_epoch(2)
    assert all(np.array_equal(a[i][0], b[i][0]) for i in range(len(a)))
    a_epoch2 = [a[i][0] for i in range(len(a))]
    a.set_epoch(3)
    assert all(not np.array_equal(a_epoch2[i], a[i][0]) for i in range(len(a)))
    other_seed = ImageFolder(tmp_path, transforms=AUGMENT, seed=8)
    other_seed.set_epoch(2)
    assert not np.array_equal(other_seed[0][0], a_epoch2[0])


def test_seed_must_be_non_negative_int(tmp_path):
    with pytest.raises(DataError, match="seed"):
        ImageFolder(make_folder(tmp_path), seed=-1)


def test_shipped_digits_dataset_loads():
    train = ImageFolder(os.path.join(ROOT, "data", "digits", "train"))
    val = ImageFolder(os.path.join(ROOT, "data", "digits", "val"))
    assert train.class_names == val.class_names == [str(d) for d in range(10)]
    assert len(train) + len(val) == 1797
    assert len(val) == 359
    img, label = val[0]
    assert img.shape == (3, 8, 8) and label == 0
    assert img.max() > 200 and img.min() == 0  # 0..16 was scaled to 0..255


def test_list_images_walks_a_folder_recursively_in_sorted_order(tmp_path):
    for rel in ["b/z.png", "b/a.JPG", "a.png", "c/d/e.webp", ".hidden/x.png", "b/.y.png"]:
        save(str(tmp_path / rel), Image.fromarray(rgb_array(0)).convert("RGB"),
             format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [os.path.relpath(p, tmp_path) for p in list_images(str(tmp_path))]
    assert found == ["a.png", os.path.join("b", "a.JPG"), os.path.join("b", "z.png"),
                     os.path.join("c", "d", "e.webp")]
    assert list_images(str(tmp_path / "notes.txt")) == [str(tmp_path / "notes.txt")]  # a file


def test_list_images_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        list_images(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="--input") as err:
        list_images(str(tmp_path / "missing"), "--input")
    assert str(tmp_path / "missing") in str(err.value)
