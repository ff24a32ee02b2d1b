"""Read any supported checkpoint into one form: a state dict with ImageClassifier names, and
the backbone family it belongs to.

Supported sources (the file's content decides, not its extension):

* official Flax Mixer ``.npz`` (``stem/kernel``, ``MixerBlock_{i}/...``; see ``official.py``);
* state dicts as ``.pdparams``, ``.pdckpt`` (training checkpoints: their ``model``),
  ``.safetensors`` or a plain NumPy ``.npz``, in one of these layouts:

  =============  ==================================  =====================  ===============
  layout         backbone keys                       head keys              GELU
  =============  ==================================  =====================  ===============
  timm           ``stem.proj.*``, ``blocks.*``, ...  ``head.*``             exact
  PASSL v1       ``backbone.stem.proj.*``, ...       ``head.fc_cls.*``      exact
  passl_mixer    ``backbone.stem.proj.*``, ...       ``head.fc.*``          family default
  MoCo v3        ``base_encoder.backbone.*``         (none taken)           family default
  BYOL           ``online.backbone.*``               (none taken)           family default
  =============  ==================================  =====================  ===============

  For the self-supervised layouts only the named backbone is taken (MoCo v3's base encoder,
  BYOL's online network); projectors, predictors and momentum/target copies are ignored.
  The GELU column is what the code that wrote such files computes ("family default" is the
  family's ``DEFAULT_GELU``: tanh for the Mixer, as the official Flax code); the official
  Flax code uses the tanh form. A ``backbone.*`` file without a head cannot tell PASSL v1
  from passl_mixer and is taken as passl_mixer's; an unprefixed one (a bare backbone's state
  dict) is taken as timm's.

The family (MlpMixer, GMLP, ResMLP, FNet, or any registered :class:`IsotropicBackbone` with a
``STATE_DICT``) is told by its marker key once its ``renames`` (other code bases' names, e.g.
the official ResMLP code's ``patch_embed.`` / ``attn.`` / ``gamma_1``) are applied; nothing
here knows a family's parameter names.

The result names backbone parameters ``backbone.<our name>`` and the classifier
``head.fc.weight`` [C, classes] / ``head.fc.bias``. Linear weights stored [out, in] (a
PyTorch state dict saved to ``.npz``) are recognised by their shapes and transposed.

``.npz`` files are opened with ``allow_pickle=False``. ``.pdparams``/``.pdckpt`` are Python
pickles (Paddle's format): read only files you trust.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from ..errors import CheckpointError
from ..fileio import require_file
from ..models.backbones.base import IsotropicBackbone
from ..models.backbones.mlp_mixer import MlpMixer
from ..registry import BACKBONES
from .official import is_official, read_member, read_official
from .weights import WEIGHTS_INSIDE, list_some, load_weights

BACKBONE = "backbone."
HEAD = "head.fc."
STEM = "stem.proj.weight"  # every family's patch stem, relative to the backbone


@dataclass
class Layout:
    name: str
    description: str
    backbone_prefix: str
    head_prefix: Optional[str]   # None: the layout's head (if any) is not taken
    gelu: Optional[str]          # None: the family's DEFAULT_GELU (files this package wrote)
    backbone_only: bool = False  # keys outside the backbone are ignored rather than kept
    requires: Tuple[str, ...] = ()  # other keys that tell this layout from the next ones

    def matches(self, state) -> bool:
        if not all(k in state for k in self.requires):
            return False
        if self.backbone_prefix + STEM in state:
            return True
        # another code base's stem name (the official ResMLP code's patch_embed.proj.weight)
        relative = [k[len(self.backbone_prefix):] for k in state
                    if k.startswith(self.backbone_prefix)]
        return any(family.STATE_DICT.rename(k) == STEM
                   for k in relative for _, family in families())


# Tried in order; the first that matches wins.
LAYOUTS = (
    Layout("mocov3", "MoCo v3 checkpoint (base encoder's backbone)", "base_encoder.backbone.",
           None, None, backbone_only=True),
    Layout("byol", "BYOL checkpoint (online network's backbone)", "online.backbone.",
           None, None, backbone_only=True),
    Layout("passl-v1", "PASSL v1 state dict", BACKBONE, "head.fc_cls.", "exact",
           requires=("head.fc_cls.weight",)),
    Layout("passl_mixer", "passl_mixer state dict", BACKBONE, HEAD, None),
    Layout("timm", "timm-style state dict", "", "head.", "exact"),
)
CHECKPOINT_EXPECTED = ("an official Mixer .npz, or a state dict as .pdparams, .pdckpt, "
                       ".safetensors or NumPy .npz")
OFFICIAL = Layout("official", "official Flax Mixer .npz", "", None, "tanh")


# -- families ------------------------------------------------------------------------------
def families() -> List[Tuple[str, Type[IsotropicBackbone]]]:
    """The registered backbone families whose checkpoints can be read: (registered name,
    class) of every :class:`IsotropicBackbone` subclass with a ``STATE_DICT``."""
    found, seen = [], set()
    for name in BACKBONES.keys():
        cls = BACKBONES.get(name)
        if (isinstance(cls, type) and issubclass(cls, IsotropicBackbone)
                and cls.STATE_DICT is not None and cls not in seen):
            seen.add(cls)
            found.append((name, cls))
    return found


def family_name(family: Type[IsotropicBackbone]) -> str:
    """The name ``family`` is registered under (what a config's ``backbone.name`` says)."""
    return next((name for name, cls in families() if cls is family), family.__name__)


def detect_family(keys: Sequence[str], source: str) -> Type[IsotropicBackbone]:
    """The family whose marker key is among ``keys`` (relative to the backbone) once the
    family's renames are applied; an error if none or several are."""
    found = [cls for _, cls in families()
             if any(cls.STATE_DICT.rename(k) == cls.STATE_DICT.marker for k in keys)]
    if len(found) == 1:
        return found[0]
    markers = "; ".join(f"{name}: '{cls.STATE_DICT.marker}'" for name, cls in families())
    if not found:
        raise CheckpointError(
            f"{source} holds a patch stem but no registered backbone family's marker key, so "
            f"its family is unknown. Markers (relative to the backbone, after each family's "
            f"renames): {markers}. Backbone keys found: {list_some(sorted(keys))}.")
    raise CheckpointError(
        f"{source} holds the marker keys of several backbone families "
        f"({', '.join(family_name(cls) for cls in found)}), so its family is ambiguous. "
        f"Markers: {markers}.")


def _rename(relative: Dict[str, np.ndarray], family, source: str
            ) -> Tuple[Dict[str, np.ndarray], int]:
    """``relative`` (backbone keys) in our names; the count of keys renamed."""
    out, renamed = {}, 0
    for key, value in relative.items():
        new = family.STATE_DICT.rename(key)
        if new in out:
            raise CheckpointError(f"{source}: two keys become '{new}' in {family_name(family)}'s "
                                  f"names (one is '{key}'); keep only one of them.")
        renamed += new != key
        out[new] = value
    return out, renamed


# -- reading -------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint read by :func:`read_checkpoint`."""
    path: str
    layout: Layout
    weights: Dict[str, np.ndarray]           # ImageClassifier names (backbone.*, head.fc.*)
    ignored: List[str] = field(default_factory=list)  # keys left out (SSL projectors, ...)
    notes: List[str] = field(default_factory=list)    # what was done to the tensors
    family: Optional[Type[IsotropicBackbone]] = None  # None: told from the weights' keys

    def __post_init__(self):
        if self.family is None:
            self.family = detect_family([k[len(BACKBONE):] for k in self.weights
                                         if k.startswith(BACKBONE)], f"'{self.path}'")

    @property
    def has_head(self) -> bool:
        return f"{HEAD}weight" in self.weights

    @property
    def gelu(self) -> str:
        """The GELU form the code that wrote the checkpoint computes."""
        return self.layout.gelu or self.family.DEFAULT_GELU

    @property
    def family_name(self) -> str:
        return family_name(self.family)


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
            return Checkpoint(path, OFFICIAL, read_official(npz, path), family=MlpMixer)
        state = {key: read_member(npz, key, path) for key in npz.files}
    return _from_state_dict(state, path)


def _from_state_dict(state: Dict[str, np.ndarray], path: str) -> Checkpoint:
    layout = next((lay for lay in LAYOUTS if lay.matches(state)), None)
    if layout is None:
        prefixes = dict.fromkeys(repr(lay.backbone_prefix) for lay in LAYOUTS)
        stems = [k for k in state if k.endswith(("stem/kernel", STEM))]
        hint = (f" A stem is at '{stems[0]}': re-export the file without that path prefix."
                if stems else "")
        raise CheckpointError(
            f"'{path}' is not a Mixer checkpoint in a known layout (families: "
            f"{', '.join(name for name, _ in families())}): no 'stem/kernel' (official "
            f".npz) and no '{STEM}' under any of the prefixes "
            f"{', '.join(prefixes)}.{hint} Keys found: {list_some(sorted(state))}.")
    relative, head, others, ignored = {}, {}, {}, []
    for key, value in state.items():
        if layout.head_prefix is not None and key.startswith(layout.head_prefix):
            head[HEAD + key[len(layout.head_prefix):]] = value
        elif key.startswith(layout.backbone_prefix):
            relative[key[len(layout.backbone_prefix):]] = value
        elif layout.backbone_only:
            ignored.append(key)
        else:
            others[key] = value  # kept, so that loading reports it as unexpected
    family = detect_family(list(relative), f"'{path}'")
    relative, renamed = _rename(relative, family, f"'{path}'")
    weights = {**{BACKBONE + k: v for k, v in relative.items()}, **head, **others}
    notes = ([f"renamed {renamed} keys to {family_name(family)}'s names in this package"]
             if renamed else [])
    notes += _fix_linear_orientation(weights, path)
    return Checkpoint(path, layout, weights, ignored, notes, family)


def _fix_linear_orientation(weights: Dict[str, np.ndarray], path: str) -> List[str]:
    """Transpose Linear weights stored [out, in] (PyTorch's layout) to Paddle's [in, out].

    A Linear weight is a 2-D ``*.weight`` with a 1-D ``*.bias`` beside it; its output size is
    the bias's length, so any non-square weight tells the file's layout; square ones (gMLP's
    gate and ResMLP's token map, S x S) cannot, and follow the others. Other parameters (norm
    and Affine scales, LayerScale, position embeddings, the conv stem) are never touched.
    Returns a note if it transposed.
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


def fit_singleton_dims(weights: Dict[str, np.ndarray], shapes: Dict[str, Sequence[int]]
                       ) -> List[str]:
    """Reshape, in place, arrays of ``weights`` whose shape differs from ``shapes`` (the
    model's, same names) only by axes of length 1 (the official ResMLP code's Affine
    ``alpha``/``beta`` are [C] where ours are [1, 1, C]). Returns a note if it reshaped."""
    changed = []
    for key, value in weights.items():
        want = shapes.get(key)
        have = np.shape(value)
        if (want is not None and tuple(want) != tuple(have)
                and [d for d in want if d != 1] == [d for d in have if d != 1]):
            weights[key] = np.reshape(value, tuple(want))
            changed.append(f"{key} {list(have)} -> {list(want)}")
    return ([f"reshaped {len(changed)} parameters that differ only in axes of length 1: "
             f"{list_some(changed, 2)}"] if changed else [])


# -- facts about a checkpoint's architecture -----------------------------------------------
def infer_dims(weights: Dict[str, np.ndarray], path: str = "the checkpoint",
               family: Optional[Type[IsotropicBackbone]] = None) -> Dict[str, int]:
    """The family's dimensions (its ``dims_from_state_dict``: ``DIM_KEYS``, ``in_channels``,
    ``num_tokens``) and the head's class count (0 if none) from a state dict's shapes."""
    relative = {k[len(BACKBONE):]: v for k, v in weights.items() if k.startswith(BACKBONE)}
    family = family or detect_family(list(relative), path)
    dims = dict(family.dims_from_state_dict(relative, path))
    head = weights.get(f"{HEAD}weight")
    dims["num_classes"] = int(np.shape(head)[1]) if head is not None else 0
    return dims


def token_grid(num_tokens: int, patch_size: int,
               img_size: Union[None, int, Sequence[int]] = None) -> Tuple[int, int]:
    """The (rows, columns) patch grid of a checkpoint whose token-indexed weights are for
    ``num_tokens`` tokens: from ``img_size`` (the resolution it was trained at) if given, which
    is then checked, else the square grid (an error if ``num_tokens`` is not a square)."""
    if img_size is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise CheckpointError(
                f"The checkpoint's token-indexed weights are for {num_tokens} tokens, which is "
                f"not a square patch grid, so its resolution cannot be inferred; give img_size "
                f"= [height, width], the resolution it was trained at.")
        return side, side
    h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]),
                                                                    int(img_size[1]))
    if h % patch_size or w % patch_size or (h // patch_size) * (w // patch_size) != num_tokens:
        raise CheckpointError(
            f"img_size {h}x{w} in {patch_size}-pixel patches does not give the {num_tokens} "
            f"tokens the checkpoint's token-indexed weights are for; img_size must be the "
            f"resolution the checkpoint was trained at.")
    return h // patch_size, w // patch_size
