"""Image classification datasets: a class-folder tree and a PaddleClas list file.

Both check their inputs in the constructor, so a wrong path fails before any model is built,
and both return ``(float32 CHW array, int64 label)`` samples -- ``(uint8 CHW array, label)``
once the loader has taken their Normalize / RandomErasing tail to run on the device
(:meth:`_ImageDataset.split_for_device`). A leading RandomResizedCrop decodes JPEGs at a reduced
size when its box allows (:meth:`RandomResizedCrop.decode_scale`).

Reproducible augmentation: ``__getitem__(idx)`` seeds ``numpy.random.default_rng([seed, epoch,
idx])`` and hands it to the transforms, so a sample's augmentation depends only on (seed, epoch,
index) -- not on the number of workers, processes, or the order samples are read in. Call
``set_epoch`` before each epoch (the loader's ``set_epoch`` does it).

Colors: every image becomes 8-bit RGB (see :func:`to_rgb`). Unreadable images are skipped, not
fatal: a warning names the file, ``num_skipped`` counts it (in the process that read it; each
DataLoader worker has its own count), and the next readable sample in index order is returned.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
from PIL import Image

from ..errors import DataError
from ..fileio import read_text, require_dir
from ..registry import DATASETS
from .transforms import (Compose, RandomResizedCrop, SampleError, build_transforms,
                         describe_sample, pil_to_chw, sample_error)

logger = logging.getLogger("passl_mixer.data")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff",
                  ".webp", ".gif")
# How many consecutive unreadable images __getitem__ steps over before giving up.
MAX_READ_ATTEMPTS = 32
_WHITE = (255, 255, 255)


def list_images(path: str, what: str = "path") -> List[str]:
    """``[path]`` if ``path`` is a file, else the images under it: recursively, hidden files and
    folders left out, sorted (folders and files by name, level by level). ``what`` names the
    path in the :class:`DataError` raised for a missing path or a folder without images."""
    if os.path.isfile(path):
        return [path]
    require_dir(path, what, DataError, "an image file or a folder of images")
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS))
    if not found:
        raise DataError(f"Folder '{path}' holds no images ({', '.join(IMG_EXTENSIONS)}).")
    return found


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    - 16-bit grayscale (``I;16*``) is scaled from 0..65535 to 0..255.
    - 32-bit int / float grayscale (``I``, ``F``) has no standard range, so it is stretched
      from its own min..max to 0..255 (a constant image becomes black).
    - Images with transparency (RGBA, LA, PA, or a palette / color key with a transparent
      entry) are composited onto a white background: the color under a fully transparent pixel
      is arbitrary (often black), and white is what a viewer shows.
    - Everything else (L, 1, P, CMYK, YCbCr, ...) goes through PIL's ``convert('RGB')``.
    """
    if img.mode.startswith("I;16"):
        gray = np.asarray(img).astype(np.float32) / 257.0
        return Image.fromarray(np.round(gray).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = values.min(), values.max()
        span = high - low if high > low else 1.0
        return Image.fromarray(np.round((values - low) / span * 255).astype(np.uint8),
                               "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str, reduce=None) -> Image.Image:
    """Open and fully decode ``path`` (so a truncated file fails here), as RGB.

    ``reduce``: called with the full (width, height) before decoding, it returns a JPEG DCT
    reduction s (1, 2, 4 or 8): a JPEG is then decoded at 1/s of the size (PIL's draft), which
    costs about as much as decoding the smaller image. Other formats ignore it; the image's
    ``passl_mixer_reduction`` attribute says which reduction was applied.
    """
    with Image.open(path) as img:
        reduction = 1
        if reduce is not None:
            wanted = reduce(img.size)
            if wanted > 1 and img.format == "JPEG":
                full_width = img.width
                drafted = img.draft(img.mode if img.mode in ("RGB", "L") else None,
                                    (img.width // wanted, img.height // wanted))
                if drafted is not None:
                    reduction = full_width / drafted[1][2]
        img.load()
        img = to_rgb(img)
    img.passl_mixer_reduction = reduction
    return img


class _ImageDataset(paddle.io.Dataset):
    """Shared sample loading: seeding, RGB conversion and skipping of unreadable files."""

    def __init__(self, samples: List[Tuple[str, int]], transforms: Optional[List[Dict[str, Any]]],
                 seed: int):
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise DataError(f"The dataset seed must be an int >= 0, got {seed!r}.")
        self.samples = samples
        self.transforms = build_transforms(transforms)
        self.seed = int(seed)
        self.epoch = 0
        self.num_skipped = 0
        # float32 (the dataset's own contract) or uint8 (set by split_for_device: the loader
        # then casts and normalises the batch on the device).
        self.output_dtype = np.float32

    def split_for_device(self) -> List[List[Any]]:
        """Leave the pipeline's Normalize / RandomErasing tail to the loader's device stage
        (:mod:`.device`): from now on samples are uint8 (3, H, W) arrays. Returns ``[tail]``
        (one pipeline: one image per sample)."""
        from .device import split_batch_tail

        self.transforms, tail = split_batch_tail(self.transforms)
        self.output_dtype = np.uint8
        return [tail]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        """``(image, label)``; the image is float32 (3, H, W), the label an int64 scalar.

        If the transforms end on a PIL image (e.g. ``transforms=None``), it is converted to a
        float32 CHW array with the raw 0..255 values, so every sample has the same type.
        """
        idx = int(idx)
        transforms = self.transforms.transforms
        crop = transforms[0] if transforms and type(transforms[0]) is RandomResizedCrop \
            and transforms[0].reduced_decode else None
        drawn = {}

        def reduce(size):
            # The crop box is drawn on the full-size geometry, from the sample's generator, as
            # the crop itself would draw it; only the decode is then reduced (see decode_scale).
            # A fresh generator per file tried: the draws do not depend on skipped files.
            drawn["rng"] = np.random.default_rng([self.seed, self.epoch, idx])
            drawn["box"] = crop.crop_box(size[0], size[1], drawn["rng"])
            return crop.decode_scale(size[0], size[1], drawn["box"])

        img, label, path = self._load(idx, reduce if crop is not None else None)
        rng = drawn.get("rng") or np.random.default_rng([self.seed, self.epoch, idx])
        try:
            if "box" in drawn:
                try:
                    img = crop.resize_box(img, drawn["box"], img.passl_mixer_reduction)
                except Exception as exc:
                    exc.passl_mixer_transform = crop  # as Compose marks it
                    raise
                transforms = transforms[1:]
            img = Compose(transforms)(img, rng)
        except Exception as exc:  # one message naming the sample, its file and the transform
            raise sample_error(idx, path, exc) from exc
        if isinstance(img, Image.Image):
            if self.output_dtype == np.uint8:
                img = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
            else:
                img = pil_to_chw(img)
        return img, np.int64(label)

    def _load(self, idx: int, reduce=None) -> Tuple[Image.Image, int, str]:
        """(image, label, path) of sample ``idx``, or of the next readable one after it
        (wrapping around). ``reduce``: see :func:`load_rgb`."""
        n = len(self.samples)
        attempts = min(n, MAX_READ_ATTEMPTS)
        for step in range(attempts):
            path, label = self.samples[(idx + step) % n]
            try:
                return load_rgb(path, reduce), label, path
            except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many exception types
                self.num_skipped += 1
                warned = self.__dict__.setdefault("_warned_unreadable", set())
                if path not in warned:  # once per file: a whole unreadable class is tried often
                    warned.add(path)
                    logger.warning("Skipping unreadable image %s (%s: %s)", path,
                                   type(exc).__name__, exc)
        path = self.samples[idx][0]
        raise SampleError(f"{describe_sample(idx, path)}: none of the {attempts} consecutive "
                          f"images starting at this one could be read (see the warnings above for "
                          f"each file); check that the dataset files are intact.", index=idx,
                          path=path)


@DATASETS.register()
class ImageFolder(_ImageDataset):
    """Images under ``root/<class>/`` (subfolders of a class folder included).

    Classes are the sorted names of ``root``'s subfolders and labels their index, so the
    train and val trees of ImageNet (``<wnid>/`` folders) get the same labels. Files are
    matched on ``extensions`` case-insensitively; hidden files and folders are ignored.

    Attributes: ``class_names`` (list of str), ``num_classes``, ``samples`` (list of
    ``(path, label)``), ``seed``, ``epoch``, ``num_skipped``.
    """

    def __init__(self, root: str, transforms: Optional[List[Dict[str, Any]]] = None,
                 extensions: Sequence[str] = IMG_EXTENSIONS, seed: int = 0):
        require_dir(root, "ImageFolder root", DataError,
                    "a folder with one subfolder of images per class")
        root = os.fspath(root)
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.root = root
        self.class_names = sorted(entry.name for entry in os.scandir(root)
                                  if entry.is_dir() and not entry.name.startswith("."))
        self.num_classes = len(self.class_names)
        if not self.class_names:
            loose = [f for f in os.listdir(root) if f.lower().endswith(exts)]
            found = f" It holds {len(loose)} images directly; move them into class folders." \
                if loose else ""
            raise DataError(f"ImageFolder root '{root}' has no class subfolders; expected "
                            f"'{root}/<class>/<image>'.{found}")
        samples = []
        for label, name in enumerate(self.class_names):
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                samples.extend((os.path.join(dirpath, f), label) for f in sorted(filenames)
                               if not f.startswith(".") and f.lower().endswith(exts))
        if not samples:
            raise DataError(f"ImageFolder root '{root}' has {self.num_classes} class folders but "
                            f"no images with the extensions {', '.join(exts)}.")
        counts = np.bincount([label for _, label in samples], minlength=self.num_classes)
        empty = [self.class_names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            logger.warning("ImageFolder '%s': %d class folder(s) hold no images (they keep their "
                           "label): %s", root, len(empty), ", ".join(empty[:10]))
        super().__init__(samples, transforms, seed)


LIST_FILE_EXPECTED = "a text file with one 'relative/path label' line per image"


@DATASETS.register()
class ImageList(_ImageDataset):
    """Images listed in a PaddleClas list file: one ``relative/path label`` per line.

    Paths are relative to ``root``; the label is the last whitespace-separated field, so
    paths may contain spaces. Blank lines and lines starting with ``#`` are ignored. Every
    listed file is checked here, once.

    ``class_names_file`` (optional) holds one class name per line, line i naming label i.
    ``class_names`` is that list, or None without the file; ``num_classes`` is its length, or
    the largest label + 1.
    """

    def __init__(self, root: str, list_file: str,
                 transforms: Optional[List[Dict[str, Any]]] = None, seed: int = 0,
                 class_names_file: Optional[str] = None):
        require_dir(root, "ImageList root", DataError,
                    f"the folder the paths in list_file '{os.fspath(list_file)}' are relative to")
        root = os.fspath(root)
        text = read_text(list_file, "ImageList list_file", DataError, LIST_FILE_EXPECTED)
        list_file = os.fspath(list_file)
        self.root = root
        self.list_file = list_file
        samples, missing = self._read_list(root, list_file, text)
        if missing:
            shown = "; ".join(f"line {n}: '{p}'" for n, p in missing[:5])
            raise DataError(f"{len(missing)} of the {len(samples)} entries in list file "
                            f"'{list_file}' point to no file under root '{root}' ({shown}"
                            f"{'; ...' if len(missing) > 5 else ''}). Check that root is the "
                            f"folder the listed paths are relative to.")
        if not samples:
            raise DataError(f"List file '{list_file}' lists no images (it is empty or only "
                            f"has blank and comment lines).")
        max_label = max(label for _, label in samples)
        self.class_names = self._read_class_names(class_names_file, max_label)
        self.num_classes = len(self.class_names) if self.class_names else max_label + 1
        super().__init__(samples, transforms, seed)

    @staticmethod
    def _read_list(root: str, list_file: str, content: Optional[str] = None):
        """(samples, missing): all entries, and (line number, path) of those with no file.
        ``content`` is the list file's text (read here when not given)."""
        if content is None:
            content = read_text(list_file, "ImageList list_file", DataError, LIST_FILE_EXPECTED)
        samples, missing = [], []
        for lineno, line in enumerate(content.splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.rsplit(None, 1)
            if len(fields) != 2:
                raise DataError(f"{list_file}:{lineno}: expected 'relative/path label', "
                                f"got {text!r}.")
            rel_path, label_text = fields
            try:
                label = int(label_text)
            except ValueError:
                label = None
            if label is None or label < 0:
                raise DataError(f"{list_file}:{lineno}: the label {label_text!r} is not an "
                                f"integer >= 0 (line: {text!r}).")
            path = os.path.join(root, rel_path)
            if not os.path.isfile(path):
                missing.append((lineno, rel_path))
            samples.append((path, label))
        return samples, missing

    @staticmethod
    def _read_class_names(path: Optional[str], max_label: int) -> Optional[List[str]]:
        if path is None:
            return None
        text = read_text(path, "ImageList class_names_file", DataError,
                         "a text file with one class name per line (line i names label i)")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) <= max_label:
            raise DataError(f"class_names_file '{path}' names {len(names)} classes, but the list "
                            f"file uses label {max_label}; expected one name per line for labels "
                            f"0..{max_label} at least.")
        return names
