"""Read any supported Mixer checkpoint into one form: a state dict with ImageClassifier names.

Supported sources (the file's content decides, not its extension):

* official Flax ``.npz`` (``stem/kernel``, ``MixerBlock_{i}/...``; see ``official.py``);
* state dicts as ``.pdparams``, ``.pdckpt`` (training checkpoints: their ``model``),
  ``.safetensors`` or a plain NumPy ``.npz``, in one of these layouts:

  =============  ==================================  =====================  ==========
  layout         backbone keys                       head keys              GELU
  =============  ==================================  =====================  ==========
  timm           ``stem.proj.*``, ``blocks.*``, ...  ``head.*``             exact
  PASSL v1       ``backbone.stem.proj.*``, ...       ``head.fc_cls.*``      exact
  passl_mixer    ``backbone.stem.proj.*``, ...       ``head.fc.*``          tanh
  MoCo v3        ``base_encoder.backbone.*``         (none taken)           tanh
  BYOL           ``online.backbone.*``               (none taken)           tanh
  =============  ==================================  =====================  ==========

  For the self-supervised layouts only the named backbone is taken (MoCo v3's base encoder,
  BYOL's online network); projectors, predictors and momentum/target copies are ignored.
  The GELU column is what the code that wrote such files computes; the official Flax code
  uses the tanh form. A ``backbone.*`` file without a head cannot tell PASSL v1 from
  passl_mixer and is taken as passl_mixer's; an unprefixed one (a bare MlpMixer's state dict)
  is taken as timm's.

The result names backbone parameters ``backbone.<timm name>`` and the classifier
``head.fc.weight`` [C, classes] / ``head.fc.bias``. Linear weights stored [out, in] (a
PyTorch state dict saved to ``.npz``) are recognised by their shapes and transposed.

``.npz`` files are opened with ``allow_pickle=False``. ``.pdparams``/``.pdckpt`` are Python
pickles (Paddle's format): read only files you trust.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import CheckpointError
from ..fileio import require_file
from .official import is_official, read_member, read_official
from .weights import WEIGHTS_INSIDE, list_some, load_weights

BACKBONE = "backbone."
HEAD = "head.fc."
_BLOCK = re.compile(r"backbone\.blocks\.(\d+)\.")


@dataclass
class Layout:
    name: str
    description: str
    backbone_prefix: str
    head_prefix: Optional[str]   # None: the layout's head (if any) is not taken
    gelu: str
    backbone_only: bool = False  # keys outside the backbone are ignored rather than kept
    requires: Tuple[str, ...] = ()  # other keys that tell this layout from the next ones

    def matches(self, state) -> bool:
        return (f"{self.backbone_prefix}stem.proj.weight" in state
                and all(k in state for k in self.requires))


# Tried in order; the first that matches wins.
LAYOUTS = (
    Layout("mocov3", "MoCo v3 checkpoint (base encoder's backbone)", "base_encoder.backbone.",
           None, "tanh", backbone_only=True),
    Layout("byol", "BYOL checkpoint (online network's backbone)", "online.backbone.",
           None, "tanh", backbone_only=True),
    Layout("passl-v1", "PASSL v1 state dict", BACKBONE, "head.fc_cls.", "exact",
           requires=("head.fc_cls.weight",)),
    Layout("passl_mixer", "passl_mixer state dict", BACKBONE, HEAD, "tanh"),
    Layout("timm", "timm-style state dict", "", "head.", "exact"),
)
CHECKPOINT_EXPECTED = ("an official Mixer .npz, or a state dict as .pdparams, .pdckpt, "
                       ".safetensors or NumPy .npz")
OFFICIAL = Layout("official", "official Flax Mixer .npz", "", None, "tanh")


@dataclass
class Checkpoint:
    """A checkpoint read by :func:`read_checkpoint`."""
    path: str
    layout: Layout
    weights: Dict[str, np.ndarray]           # ImageClassifier names (backbone.*, head.fc.*)
    ignored: List[str] = field(default_factory=list)  # keys left out (SSL projectors, ...)
    notes: List[str] = field(default_factory=list)    # what was done to the tensors

    @property
    def has_head(self) -> bool:
        return f"{HEAD}weight" in self.weights


def read_checkpoint(path: str) -> Checkpoint:
    """Read ``path`` (any supported source, see the module docstring) into a :class:`Checkpoint`."""
    path = require_file(path, "Checkpoint file", CheckpointError, CHECKPOINT_EXPECTED,
                        inside=WEIGHTS_INSIDE, nonempty=True)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # .npz archives are zip files
    if is_zip:
        return _read_npz(path)
    return _from_state_dict(load_weights(path, CHECKPOINT_EXPECTED), path)


def _read_npz(path: str) -> Checkpoint:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy/OS errors all mean "unreadable"
        raise CheckpointError(f"Cannot read '{path}' as a NumPy .npz archive: it is truncated "
                              f"or corrupt ({type(exc).__name__}: {exc}).") from None
    with npz:
        if is_official(npz.files):
            return Checkpoint(path, OFFICIAL, read_official(npz, path))
        state = {key: read_member(npz, key, path) for key in npz.files}
    return _from_state_dict(state, path)


def _from_state_dict(state: Dict[str, np.ndarray], path: str) -> Checkpoint:
    layout = next((lay for lay in LAYOUTS if lay.matches(state)), None)
    if layout is None:
        prefixes = dict.fromkeys(repr(lay.backbone_prefix) for lay in LAYOUTS)
        stems = [k for k in state if k.endswith(("stem/kernel", "stem.proj.weight"))]
        hint = (f" A stem is at '{stems[0]}': re-export the file without that path prefix."
                if stems else "")
        raise CheckpointError(
            f"'{path}' is not a Mixer checkpoint in a known layout: no 'stem/kernel' (official "
            f".npz) and no 'stem.proj.weight' under any of the prefixes "
            f"{', '.join(prefixes)}.{hint} Keys found: {list_some(sorted(state))}.")
    weights, ignored = {}, []
    for key, value in state.items():
        if layout.head_prefix is not None and key.startswith(layout.head_prefix):
            weights[HEAD + key[len(layout.head_prefix):]] = value
        elif key.startswith(layout.backbone_prefix):
            weights[BACKBONE + key[len(layout.backbone_prefix):]] = value
        elif layout.backbone_only:
            ignored.append(key)
        else:
            weights[key] = value  # kept, so that loading reports it as unexpected
    notes = _fix_linear_orientation(weights, path)
    return Checkpoint(path, layout, weights, ignored, notes)


def _fix_linear_orientation(weights: Dict[str, np.ndarray], path: str) -> List[str]:
    """Transpose Linear weights stored [out, in] (PyTorch's layout) to Paddle's [in, out].

    A Linear weight's output size is its bias's length, so any non-square weight tells the
    file's layout; square ones cannot, and follow the others. Returns a note if it transposed.
    """
    linears = {k: w for k, w in weights.items()
               if k.endswith(".weight") and np.ndim(w) == 2
               and np.ndim(weights.get(k[:-len("weight")] + "bias")) == 1}
    votes = set()
    for key, w in linears.items():
        out = len(weights[key[:-len("weight")] + "bias"])
        rows, cols = np.shape(w)
        if rows != cols:
            votes.add("paddle" if cols == out else "torch" if rows == out else "neither")
    if votes - {"paddle", "torch"} or len(votes) > 1:
        raise CheckpointError(f"'{path}': the Linear weights' shapes do not match their biases "
                              f"in one consistent layout ([in, out] or [out, in]).")
    if votes != {"torch"}:
        return []
    for key in linears:
        weights[key] = np.ascontiguousarray(np.transpose(weights[key]))
    return [f"transposed {len(linears)} Linear weights stored [out, in] (PyTorch layout) to "
            f"Paddle's [in, out]"]


# -- facts about a checkpoint's architecture -----------------------------------------------
def infer_dims(weights: Dict[str, np.ndarray], path: str = "the checkpoint") -> Dict[str, int]:
    """MlpMixer dimensions (and the head's class count, 0 if none) from a state dict's shapes."""
    stem = _need(weights, f"{BACKBONE}stem.proj.weight", path)
    tokens = _need(weights, f"{BACKBONE}blocks.0.mlp_tokens.fc1.weight", path)
    channels = _need(weights, f"{BACKBONE}blocks.0.mlp_channels.fc1.weight", path)
    if np.ndim(stem) != 4 or np.shape(stem)[2] != np.shape(stem)[3]:
        raise CheckpointError(f"{path}: the stem weight has shape {list(np.shape(stem))}; "
                              f"expected [hidden, in_channels, patch, patch].")
    blocks = sorted({int(m.group(1)) for k in weights for m in [_BLOCK.match(k)] if m})
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"{path}: Mixer block indices {blocks} are not 0..n-1.")
    head = weights.get(f"{HEAD}weight")
    return dict(patch_size=int(np.shape(stem)[2]), in_channels=int(np.shape(stem)[1]),
                hidden_dim=int(np.shape(stem)[0]), num_blocks=len(blocks),
                tokens_mlp_dim=int(np.shape(tokens)[1]),
                channels_mlp_dim=int(np.shape(channels)[1]),
                num_tokens=int(np.shape(tokens)[0]),
                num_classes=int(np.shape(head)[1]) if head is not None else 0)


def _need(weights, key, path):
    if key not in weights:
        raise CheckpointError(f"{path} has no '{key}', which every Mixer checkpoint needs; "
                              f"keys found: {list_some(sorted(weights))}.")
    return weights[key]


def token_grid(num_tokens: int, patch_size: int,
               img_size: Union[None, int, Sequence[int]] = None) -> Tuple[int, int]:
    """The (rows, columns) patch grid of a checkpoint whose token-mixing MLP takes
    ``num_tokens`` tokens: from ``img_size`` (the resolution it was trained at) if given, which
    is then checked, else the square grid (an error if ``num_tokens`` is not a square)."""
    if img_size is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise CheckpointError(
                f"The checkpoint's token-mixing MLP takes {num_tokens} tokens, which is not a "
                f"square patch grid, so its resolution cannot be inferred; give img_size = "
                f"[height, width], the resolution it was trained at.")
        return side, side
    h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]),
                                                                    int(img_size[1]))
    if h % patch_size or w % patch_size or (h // patch_size) * (w // patch_size) != num_tokens:
        raise CheckpointError(
            f"img_size {h}x{w} in {patch_size}-pixel patches does not give the {num_tokens} "
            f"tokens the checkpoint's token-mixing MLP takes; img_size must be the resolution "
            f"the checkpoint was trained at.")
    return h // patch_size, w // patch_size
