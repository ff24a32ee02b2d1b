"""What can be built: registered names, every backbone family's variants and the shipped configs.

    import passl_mixer
    passl_mixer.list_models()     # {'models': ['BYOL', 'ImageClassifier', ...], 'backbones': ...}
    passl_mixer.list_variants()   # {'MlpMixer': {'s32': {'patch_size': 32, ...}, ...}, 'GMLP': ...}
    passl_mixer.list_configs()    # ['configs/demo/mixer_digits.yaml', ...]

``python tools/list.py`` prints the same.
"""
from __future__ import annotations

import importlib

import os
from typing import Any, Dict, List, Optional

from . import registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# config-section name of each registry, in the order a config uses them
REGISTRIES = {"models": "MODELS", "backbones": "BACKBONES", "necks": "NECKS", "heads": "HEADS",
              "losses": "LOSSES", "datasets": "DATASETS", "transforms": "TRANSFORMS",
              "optimizers": "OPTIMIZERS", "lr_schedulers": "LR_SCHEDULERS",
              "loggers": "LOGGERS"}


def list_models() -> Dict[str, List[str]]:
    """The names each registry accepts as ``name:`` (installed plugins included), sorted."""
    importlib.import_module(".optim", __package__)  # registers the optimizers and lr schedules
    importlib.import_module(".logs", __package__)  # registers the training loop's sinks

    registry.load_plugins()
    return {key: list(getattr(registry, attr).keys()) for key, attr in REGISTRIES.items()}


def backbone_families() -> Dict[str, type]:
    """The registered backbones built on the shared skeleton (``IsotropicBackbone``) that have a
    variants table (``ARCHS``), by registry name (sorted); plugins included."""
    from .models import IsotropicBackbone

    registry.load_plugins()
    found = {}
    for name in registry.BACKBONES.keys():
        cls = registry.BACKBONES.get(name)
        if isinstance(cls, type) and issubclass(cls, IsotropicBackbone) and cls.ARCHS:
            found[name] = cls
    return found


def list_variants() -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Every family's variants with their dimensions, ``{family: {arch: dims}}``; a config picks
    one as ``backbone: {name: FAMILY, arch: ARCH}`` (e.g. ``{name: MlpMixer, arch: b16}``)."""
    return {name: {arch: dict(dims) for arch, dims in cls.ARCHS.items()}
            for name, cls in backbone_families().items()}


def list_configs(root: Optional[str] = None) -> List[str]:
    """The runnable configs under ``root``/configs (default: this source checkout; a pip-installed
    package ships no configs, so then the list is empty), as paths relative to ``root``; the
    ``_base_`` fragments they inherit from are left out."""
    root = REPO_ROOT if root is None else root
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "configs")):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        found.extend(os.path.relpath(os.path.join(dirpath, f), root)
                     for f in sorted(filenames) if f.endswith((".yaml", ".yml")))
    return found
