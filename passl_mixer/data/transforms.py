"""Image transforms, built from config dicts through the ``TRANSFORMS`` registry.

Every transform is called as ``t(img, rng)``: ``img`` is a PIL RGB image (or, after
:class:`Normalize`, a float32 CHW array) and ``rng`` is a ``numpy.random.Generator``. Random
transforms draw from ``rng`` only, never from Python's ``random`` or numpy's global state, so
the dataset can make augmentation a pure function of (seed, epoch, sample index).

Order in a pipeline: the PIL transforms (crops, resizes, flips, RandAugment) first, then
:class:`Normalize` (PIL -> float32 CHW array), then :class:`RandomErasing` (works on the array).
A transform given the wrong kind of input says so instead of failing deep inside PIL or numpy.
In a loader the closing Normalize / RandomErasing run on whole batches on the training device
instead, with the same results (see :mod:`.device`); a leading :class:`RandomResizedCrop` lets
the dataset decode a JPEG at a reduced size when the crop allows (see its ``decode_scale``).

Failures are reported once, with what failed: :class:`Compose` marks an exception with the
transform that raised it, a dataset turns it into a :class:`SampleError` naming the sample and
its file (:func:`sample_error`), and :func:`check_output_size` finds at build time a pipeline
whose output size depends on the input image (so that its images could not be batched).
"""
from __future__ import annotations

import math
import os
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError, PasslMixerError
from ..registry import TRANSFORMS

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

Size = Union[int, Sequence[int]]


def interpolation_mode(name: str) -> Image.Resampling:
    """The PIL resampling filter called ``name``; an unknown name raises a ConfigError."""
    if name not in INTERPOLATIONS:
        raise ConfigError(f"Unknown interpolation '{name}'. "
                          f"Accepted names: {', '.join(INTERPOLATIONS)}.")
    return INTERPOLATIONS[name]


def _pair(size: Size, what: str) -> Tuple[int, int]:
    """``size`` as (height, width): an int means a square."""
    if isinstance(size, int) and size > 0:
        return size, size
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) and s > 0 for s in size)):
        return int(size[0]), int(size[1])
    raise ConfigError(f"{what}: size must be a positive int or [height, width], got {size!r}.")


def check_range(value: Sequence[float], what: str) -> Tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] <= value[1]):
        raise ConfigError(f"{what} must be [low, high] with low <= high, got {value!r}.")
    return float(value[0]), float(value[1])


def check_prob(value: float, what: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what}: prob must be in [0, 1], got {value!r}.")
    return float(value)


def require_pil(img: Any, what: str) -> None:
    if not isinstance(img, Image.Image):
        raise ConfigError(f"{what} works on PIL images, but got {type(img).__name__}: put it "
                          f"before Normalize in the transforms list.")


class RandomApply:
    """Base of the PIL transforms applied to an image with probability ``prob``: one draw from
    ``rng`` per image decides, and the subclass's ``apply(img, rng)`` does the change."""

    def __init__(self, prob: float):
        self.prob = check_prob(prob, type(self).__name__)

    def __call__(self, img, rng):
        require_pil(img, type(self).__name__)
        if rng.random() >= self.prob:
            return img
        return self.apply(img, rng)

    def apply(self, img: Image.Image, rng) -> Image.Image:
        raise NotImplementedError


def pil_to_chw(img: Image.Image) -> np.ndarray:
    """An RGB PIL image as a float32 (3, H, W) array with the raw 0..255 values."""
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)


class Compose:
    """Apply transforms in order, passing the same generator to each.

    An exception keeps its type and message (so calling a pipeline directly raises what the
    transform raised), but is marked with the transform that raised it: :func:`failed_transform`
    reads the mark, and :func:`sample_error` names that transform.
    """

    def __init__(self, transforms: List[Any]):
        self.transforms = list(transforms)

    def __call__(self, img, rng: np.random.Generator):
        for t in self.transforms:
            try:
                img = t(img, rng)
            except Exception as exc:
                try:  # the outermost Compose marks last: it holds the transform the config names
                    exc.passl_mixer_transform = t
                except (AttributeError, TypeError):  # an exception type without a __dict__
                    pass
                raise
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def failed_transform(exc: BaseException) -> Optional[Any]:
    """The transform a :class:`Compose` saw raise ``exc``, or None."""
    return getattr(exc, "passl_mixer_transform", None)


class SampleError(DataError):
    """One sample could not be made; the message names it (index and file) and what failed.

    ``index``, ``path`` and ``transform`` (the failing transform's repr, or None) are kept as
    attributes, also through pickling (a worker process sends its errors to the main one).
    """

    def __init__(self, message: str, index: Optional[int] = None, path: Optional[str] = None,
                 transform: Optional[str] = None):
        super().__init__(message)
        self.index, self.path, self.transform = index, path, transform

    def __reduce__(self):
        return type(self), (str(self), self.index, self.path, self.transform)


def describe_exception(exc: BaseException) -> str:
    """``exc``'s message; for an exception that is not a PasslMixerError (a bug, or PIL or numpy
    failing), with its type and the line that raised it, since no traceback is printed."""
    if isinstance(exc, PasslMixerError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (raised at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text


def sample_path(dataset: Any, index: int) -> Optional[str]:
    """The file of sample ``index``: ``dataset.samples[index][0]``, looking through wrappers
    that keep the wrapped dataset as ``.dataset`` (MultiView); None when unknown."""
    for _ in range(8):
        samples = getattr(dataset, "samples", None)
        if samples is not None:
            try:
                return str(samples[index][0])
            except (IndexError, KeyError, TypeError):
                return None
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def describe_sample(index: int, path: Optional[str]) -> str:
    return f"Sample {index} ('{path}')" if path else f"Sample {index}"


def sample_error(index: int, path: Optional[str], exc: BaseException,
                 view: Optional[int] = None) -> SampleError:
    """The :class:`SampleError` for ``exc``, raised while making sample ``index`` from ``path``:
    "Sample 17 ('a.png') failed in transform Resize(size=[16, 16]): <what it raised>"."""
    if isinstance(exc, SampleError):
        return exc
    transform = failed_transform(exc)
    where = f"failed in transform {transform!r}" if transform is not None else "failed"
    if view is not None:
        where += f" of view {view}"
    return SampleError(f"{describe_sample(index, path)} {where}: {describe_exception(exc)}",
                       index=index, path=path,
                       transform=None if transform is None else repr(transform))


def build_transforms(cfgs: Optional[List[Dict[str, Any]]]) -> Compose:
    """Build a :class:`Compose` from a list of ``{name: ..., **kwargs}`` dicts (None: empty)."""
    if cfgs is None:
        return Compose([])
    if not isinstance(cfgs, (list, tuple)):
        raise ConfigError(f"transforms must be a list of {{name: ...}} mappings, "
                          f"got {type(cfgs).__name__}: {cfgs!r}.")
    return Compose([TRANSFORMS.build(cfg) for cfg in cfgs])


# -- the output size of a pipeline -----------------------------------------------------------
# Test images (width, height): wide, tall and square, so a size that follows the input's shows.
PROBE_SIZES = ((320, 240), (240, 400), (288, 288))
FIXED_SIZE_TRANSFORMS = ("Resize with size [height, width], CenterCrop, ResizeForEval or "
                         "RandomResizedCrop")


def _probe_image(width: int, height: int) -> Image.Image:
    """A smooth colour gradient: not flat, so contrast/equalize-like ops act as on a photo."""
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([xs, ys, (xs + ys) / 2], -1).astype(np.uint8), "RGB")


def _image_size(out: Any) -> Optional[Tuple[int, int]]:
    """(width, height) of a PIL image or a CHW array; None for anything else."""
    if isinstance(out, Image.Image):
        return out.size
    if isinstance(out, np.ndarray) and out.ndim == 3:
        return int(out.shape[2]), int(out.shape[1])
    return None


def _chw_shape(out: Any) -> List[int]:
    if isinstance(out, Image.Image):
        return [len(out.getbands()), out.height, out.width]
    return [int(s) for s in out.shape]


def check_output_size(transforms: Union[Compose, List[Dict[str, Any]], None], where: str,
                      expected: Optional[Sequence[int]] = None,
                      allow_unchanged: bool = False) -> Optional[List[int]]:
    """Check that a pipeline turns every image into one fixed size; return that [C, H, W].

    The pipeline runs on a wide, a tall and a square test image (:data:`PROBE_SIZES`). A
    ConfigError naming ``where`` (e.g. ``data.val.transforms``) is raised when

    - a transform fails on a test image (e.g. a transform on the wrong side of Normalize);
    - the output size depends on the input's and differs from it, e.g. a short-side
      ``Resize: {size: 16}`` with no crop after it: the error names the transform from which on
      the size follows the input;
    - ``expected`` is given (export: the model's input) and the fixed shape is another one;
    - the output size is the input's (no transform sets a size, e.g. ``[Normalize]``), unless
      ``allow_unchanged``: a dataset of images of one size needs no resize (the loader then
      reports, naming the files, images of another size when it batches them). None is returned
      then, and also when a custom transform returns something that is not an image or array.
    """
    pipeline = transforms if isinstance(transforms, Compose) else build_transforms(transforms)
    traces: List[List[Optional[Tuple[int, int]]]] = []  # per probe: size after each transform
    outputs = []
    for width, height in PROBE_SIZES:
        img, rng, sizes = _probe_image(width, height), np.random.default_rng(0), []
        for t in pipeline.transforms:
            try:
                img = t(img, rng)
            except Exception as exc:  # noqa: BLE001 - any failure here is a broken pipeline
                raise ConfigError(f"{where}: {t!r} fails on a {width}x{height} test image: "
                                  f"{describe_exception(exc)}") from None
            sizes.append(_image_size(img))
        traces.append(sizes)
        outputs.append(img)
    steps = [tuple(sizes[j] for sizes in traces) for j in range(len(pipeline.transforms))]
    if steps and any(size is None for size in steps[-1]):
        return None  # a custom transform's output, neither an image nor a CHW array

    def state(sizes) -> str:
        if len(set(sizes)) == 1:
            return "fixed"
        return "input" if list(sizes) == list(PROBE_SIZES) else "variable"

    final = state(steps[-1]) if steps else "input"
    if final == "fixed":
        shape = _chw_shape(outputs[0])
        if expected is not None and list(shape) != list(expected):
            w, h = PROBE_SIZES[0]
            raise ConfigError(f"{where} turns a {w}x{h} image into shape {shape}, but the model "
                              f"takes {list(expected)}: fix the resize/crop sizes.")
        return shape
    if final == "input":
        if allow_unchanged:
            return None
        reason = f"the model takes {list(expected)}" if expected is not None else \
            "images of different sizes cannot be batched"
        raise ConfigError(f"{where} sets no image size: every image keeps its own, but "
                          f"{reason}. Add a transform that sets the size: "
                          f"{FIXED_SIZE_TRANSFORMS}.")
    (w0, h0), (w1, h1) = PROBE_SIZES[:2]
    (a0, b0), (a1, b1) = steps[-1][:2]
    examples = f"a {w0}x{h0} image becomes {a0}x{b0}, a {w1}x{h1} one {a1}x{b1}"
    # The transform from which on the size depends on the input image (the last time it did
    # not); usually a short-side Resize with no crop after it.
    culprit = 0
    for j in range(len(steps)):
        if state(steps[j]) == "variable" and (j == 0 or state(steps[j - 1]) != "variable"):
            culprit = j
    t = pipeline.transforms[culprit]
    hint = " (a Resize with one int keeps the aspect ratio: give it [height, width], or put a " \
        "CenterCrop after it)" if getattr(t, "short_side", False) else ""
    use = "batched or fed to the model" if expected is not None else "batched"
    raise ConfigError(f"{where} does not end in a fixed image size: from {t!r} on, the size "
                      f"depends on the input image's ({examples}), so images of different shapes "
                      f"could not be {use}. End the list with a transform that sets the size: "
                      f"{FIXED_SIZE_TRANSFORMS}{hint}.")


@TRANSFORMS.register()
class RandomResizedCrop:
    """Crop a random area fraction (``scale``) and aspect ratio (``ratio``), resize to ``size``.

    The Inception-style crop as torchvision/timm do it: 10 tries to find a box that fits, else a
    center crop with the ratio clamped into ``ratio``.

    ``reduced_decode`` (default true): as the first transform of an ImageFolder / ImageList,
    the box is drawn from the file's full size before decoding, and a JPEG is decoded at 1/2,
    1/4 or 1/8 of its size when the box still holds the output size there (:meth:`decode_scale`):
    the same boxes, a cheaper decode and resize, near-equal pixels.
    """

    def __init__(self, size: Size, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bicubic",
                 reduced_decode: bool = True):
        self.size = _pair(size, "RandomResizedCrop")
        self.scale = check_range(scale, "RandomResizedCrop scale")
        self.ratio = check_range(ratio, "RandomResizedCrop ratio")
        self.interpolation = interpolation
        self._resample = interpolation_mode(interpolation)
        if not isinstance(reduced_decode, bool):
            raise ConfigError(f"RandomResizedCrop reduced_decode must be true or false, got "
                              f"{reduced_decode!r}.")
        # Used by the datasets when this crop is the first transform: see decode_scale.
        self.reduced_decode = reduced_decode

    def crop_box(self, width: int, height: int, rng: np.random.Generator):
        """(left, top, right, bottom) of the crop for an image of this size."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def decode_scale(self, width: int, height: int, box) -> int:
        """The largest JPEG DCT reduction (8, 4, 2 or 1) at which ``box`` of a ``width`` x
        ``height`` image still holds at least the output size in both directions.

        libjpeg decodes at 1/2, 1/4 or 1/8 of the size for little more than the cost of the
        smaller image (PIL's ``Image.draft``). The crop box is drawn on the full-size geometry
        first, so the crops' distribution is the recipe's; the reduction only changes the image
        the box is resampled from, and never below the output's resolution, so the resize still
        reduces (or keeps) the size, as from the full decode. ``PIL``'s draft picks the scale
        ``min(width // w, height // h)`` for a request ``(w, h)``: a scale is used only when the
        request ``(width // s, height // s)`` gives exactly ``s``.
        """
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        out_h, out_w = self.size
        for s in (8, 4, 2):
            if (box_w >= s * out_w and box_h >= s * out_h
                    and width // (width // s) == s and height // (height // s) == s):
                return s
        return 1

    def resize_box(self, img: Image.Image, box, reduction: float = 1.0) -> Image.Image:
        """Crop ``box`` (full-size coordinates) from ``img`` decoded at ``1 / reduction`` of the
        full size, resized to the output size: pixel j of a decode at 1/s covers the full-size
        pixels [j s, (j + 1) s), so a full-size coordinate x is x / s in it."""
        if reduction != 1:
            box = tuple(v / reduction for v in box)
        # resize(box=...) crops and resizes in one pass.
        return img.resize((self.size[1], self.size[0]), self._resample, box=box)

    def __call__(self, img, rng):
        require_pil(img, "RandomResizedCrop")
        return self.resize_box(img, self.crop_box(img.width, img.height, rng))

    def __repr__(self) -> str:
        decode = "" if self.reduced_decode else ", reduced_decode=False"
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r}{decode})")


@TRANSFORMS.register()
class RandomHorizontalFlip(RandomApply):
    """Mirror left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        super().__init__(prob)

    def apply(self, img, rng):
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


@TRANSFORMS.register()
class Resize:
    """Resize: an int ``size`` sets the short side (aspect kept), ``[h, w]`` sets both."""

    def __init__(self, size: Size, interpolation: str = "bicubic"):
        self.short_side = isinstance(size, int)
        self.size = _pair(size, "Resize")
        self.interpolation = interpolation
        self._resample = interpolation_mode(interpolation)

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """(width, height) after resizing an image of this size."""
        if not self.short_side:
            return self.size[1], self.size[0]
        short = self.size[0]
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def __call__(self, img, rng):
        require_pil(img, "Resize")
        size = self.output_size(img.width, img.height)
        return img if size == img.size else img.resize(size, self._resample)

    def __repr__(self) -> str:
        size = self.size[0] if self.short_side else list(self.size)
        return f"Resize(size={size}, interpolation={self.interpolation!r})"


@TRANSFORMS.register()
class CenterCrop:
    """Crop the central ``size`` (int: square, or [h, w]); a smaller image is padded with black."""

    def __init__(self, size: Size):
        self.size = _pair(size, "CenterCrop")

    def __call__(self, img, rng):
        require_pil(img, "CenterCrop")
        h, w = self.size
        top = int(round((img.height - h) / 2))
        left = int(round((img.width - w) / 2))
        return img.crop((left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"CenterCrop(size={list(self.size)})"


@TRANSFORMS.register()
class ResizeForEval:
    """The evaluation resize: short side to ``int(img_size / crop_pct)``, then center crop.

    With the defaults, 224 -> short side 256 -> central 224x224 (timm's ``crop_pct=0.875``).
    It is :class:`Resize` followed by :class:`CenterCrop`, spelled with one ``crop_pct``.
    """

    def __init__(self, img_size: int, crop_pct: float = 0.875, interpolation: str = "bicubic"):
        if not 0 < crop_pct <= 1:
            raise ConfigError(f"ResizeForEval crop_pct must be in (0, 1], got {crop_pct!r}.")
        self.img_size = img_size
        self.crop_pct = crop_pct
        self.resize = Resize(int(img_size / crop_pct), interpolation)
        self.crop = CenterCrop(img_size)

    def __call__(self, img, rng):
        return self.crop(self.resize(img, rng), rng)

    def __repr__(self) -> str:
        return (f"ResizeForEval(img_size={self.img_size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.resize.interpolation!r})")


@TRANSFORMS.register()
class Normalize:
    """PIL RGB image -> float32 CHW array ``(pixel / scale - mean) / std``.

    The defaults (mean = std = 0.5, scale 255) put values in [-1, 1], as MLP-Mixer's
    reference preprocessing does; ImageNet statistics work too
    (``mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]``).
    """

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), scale: float = 255.0):
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"Normalize needs 3 means and 3 positive stds, got mean={mean!r}, "
                              f"std={std!r}.")
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.scale = float(scale)

    def __call__(self, img, rng):
        require_pil(img, "Normalize")
        return self.normalize(pil_to_chw(img))

    def normalize(self, values):
        """``(values / scale - mean) / std`` on float32 0..255 values: a CHW numpy array here,
        or a [B, 3, H, W] paddle Tensor on the device (the loader's batch stage, see
        :mod:`.device`), in the same float32 operations, so both give equal numbers."""
        if isinstance(values, np.ndarray):
            return (values / self.scale - self.mean) / self.std
        import paddle  # only the loader's device stage comes here

        mean = paddle.to_tensor(self.mean[None])
        std = paddle.to_tensor(self.std[None])
        return (values / self.scale - mean) / std

    def __repr__(self) -> str:
        return (f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()}, "
                f"scale={self.scale})")


@TRANSFORMS.register()
class RandomErasing:
    """Erase random rectangles of a normalized CHW array (Zhong et al. 2017, timm's version).

    With probability ``prob``, up to ``max_count`` boxes (1..max_count, uniformly) each cover a
    fraction ``scale`` of the area (divided among the boxes) with aspect ratio in ``ratio``.
    ``mode``: 'pixel' fills with per-pixel N(0, 1) noise, 'rand' with one N(0, 1) value per
    channel, 'const' with zeros (the mean, since the input is normalized).
    """

    MODES = ("pixel", "rand", "const")

    def __init__(self, prob: float = 0.25, scale: Sequence[float] = (0.02, 1 / 3),
                 ratio: Sequence[float] = (0.3, 3.3), mode: str = "pixel", max_count: int = 1):
        if mode not in self.MODES:
            raise ConfigError(f"RandomErasing mode '{mode}' is unknown. "
                              f"Accepted modes: {', '.join(self.MODES)}.")
        if not (isinstance(max_count, int) and max_count >= 1):
            raise ConfigError(f"RandomErasing max_count must be an int >= 1, got {max_count!r}.")
        self.prob = check_prob(prob, "RandomErasing")
        self.scale = check_range(scale, "RandomErasing scale")
        self.ratio = check_range(ratio, "RandomErasing ratio")
        self.mode = mode
        self.max_count = max_count

    def __call__(self, img, rng):
        if not (isinstance(img, np.ndarray) and img.ndim == 3):
            raise ConfigError(f"RandomErasing works on the CHW array Normalize returns, but got "
                              f"{type(img).__name__}: put it after Normalize.")
        boxes = self.draw(img.shape, rng)
        if not boxes:
            return img
        img = img.copy()
        for top, left, h, w, fill in boxes:
            img[:, top:top + h, left:left + w] = fill
        return img

    def draw(self, shape: Sequence[int], rng) -> List[Tuple[int, int, int, int, np.ndarray]]:
        """The erasing of one (C, H, W) image: a list of ``(top, left, h, w, fill)``, empty when
        the ``prob`` draw says no. The CPU transform and the loader's device stage both erase
        what this draws, so they erase alike."""
        if rng.random() >= self.prob:
            return []
        channels, height, width = (int(s) for s in shape)
        count = int(rng.integers(1, self.max_count + 1))
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        boxes = []
        for _ in range(count):
            for _attempt in range(10):
                target_area = height * width * rng.uniform(*self.scale) / count
                aspect = math.exp(rng.uniform(*log_ratio))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if 0 < w < width and 0 < h < height:
                    top = int(rng.integers(0, height - h + 1))
                    left = int(rng.integers(0, width - w + 1))
                    boxes.append((top, left, h, w, self._fill((channels, h, w), rng)))
                    break
        return boxes

    def _fill(self, shape, rng) -> np.ndarray:
        if self.mode == "pixel":
            return rng.standard_normal(shape, dtype=np.float32)
        if self.mode == "rand":
            return rng.standard_normal((shape[0], 1, 1), dtype=np.float32)
        return np.zeros((shape[0], 1, 1), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"RandomErasing(prob={self.prob}, scale={self.scale}, ratio={self.ratio}, "
                f"mode={self.mode!r}, max_count={self.max_count})")

