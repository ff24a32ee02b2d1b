"""Registries: name -> class tables that turn config dicts into objects.

A config dict such as ``{"name": "MlpMixer", "arch": "b16"}`` is built by looking ``name`` up in
the right registry and calling the class with the remaining keys. Classes join a registry with
the ``@BACKBONES.register()`` decorator, or from another installed package through the
``passl_mixer.plugins`` entry-point group (see :func:`load_plugins`), so a plugin can add its
own backbone or head without touching this repository.

The :class:`Registry` interface (``register()`` as a decorator, ``register(obj)`` directly,
``get(name)``) is the one PASSL v1's registries have, so the same object can stand in for a
host framework's registry and vice versa (see :func:`passl_mixer.register_into`).
"""
from __future__ import annotations

import copy
import difflib
import importlib.metadata
import inspect
import logging
import sys
from typing import Any, Callable, Dict, Iterable, Optional

from . import schema
from .errors import ConfigError, RegistryError

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "passl_mixer.plugins"


class Registry:
    """A table of classes (or factory functions) addressed by name."""

    def __init__(self, name: str):
        self.name = name
        self._entries: Dict[str, Callable] = {}

    # -- registration -------------------------------------------------------------------
    def register(self, obj: Optional[Callable] = None, *, name: Optional[str] = None,
                 force: bool = False):
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Use as ``@REG.register()``, ``@REG.register(name="x")`` or ``REG.register(cls)``.
        Registering a taken name raises unless ``force=True`` asks to replace it.
        """
        if obj is None:
            return lambda o: self.register(o, name=name, force=force)
        key = name or obj.__name__
        if key in self._entries and self._entries[key] is not obj and not force:
            raise RegistryError(
                f"'{key}' is already registered in the {self.name} registry "
                f"(by {_qualname(self._entries[key])}); pass force=True to replace it.")
        self._entries[key] = obj
        return obj

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name: str) -> Callable:
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise RegistryError(self._unknown_message(name))
        return self._entries[name]

    def _unknown_message(self, name) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (f"'{name}' is not in the {self.name} registry.{hint} "
                f"Registered names: {', '.join(known) or '(none)'}.")

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> Iterable[str]:
        return sorted(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._entries)})"

    # -- building -------------------------------------------------------------------------
    def build(self, cfg: Dict[str, Any], *, config_path: Optional[str] = None, **extra) -> Any:
        """Build ``cfg['name']`` with the other keys (and ``extra``) as keyword arguments.

        ``cfg`` is deep-copied first, so the caller's dict is never changed. The keys are
        validated against the class's signature (:func:`passl_mixer.schema.check_call`):
        unknown, missing, mistyped or out-of-range keys are reported with the key's path in the
        config (``config_path``, or found by :func:`passl_mixer.schema.tracking`), the class and
        the keys it accepts. ``extra`` are arguments the caller injects (not config keys).
        """
        path = config_path or schema.path_of(cfg)
        if not isinstance(cfg, dict):
            raise schema.located(f"{path or 'A ' + self.name + ' config'} must be a mapping "
                                 f"with a 'name' key, got {type(cfg).__name__}: {cfg!r}.", path)
        if "name" not in cfg:
            raise schema.located(f"{path or 'A ' + self.name + ' config'} needs a 'name' key "
                                 f"choosing one of: {', '.join(self.keys())}; got keys "
                                 f"{sorted(cfg)}.", path)
        kwargs = copy.deepcopy(cfg)
        schema.register_copy(cfg, kwargs)
        name = kwargs.pop("name")
        try:
            target = self.get(name)
        except RegistryError as exc:
            err = RegistryError(f"{path}.name: {exc}" if path else str(exc))
            err.config_path = path
            raise err from None
        kwargs = schema.check_call(target, kwargs, path, what=f"{self.name} '{name}'",
                                   injected=extra)
        kwargs.update(extra)
        try:
            return target(**kwargs)
        except ConfigError as exc:
            # a check inside the constructor: say which part of the config it is about, once
            path = path or str(name)
            named = str(exc).startswith(path) or f"{path}." in str(exc)
            if getattr(exc, "config_path", None) is None and not named:
                exc = type(exc)(f"{path}: {exc}")
                exc.config_path = path
                raise exc from None
            raise


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# The registries. Later modules fill them with the decorator.
BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
MODELS = Registry("model")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULERS = Registry("lr_scheduler")
LOGGERS = Registry("logger")  # train.loggers: the sinks of passl_mixer/logs.py


def build_backbone(cfg: Dict[str, Any]):
    return BACKBONES.build(cfg)


def build_neck(cfg: Optional[Dict[str, Any]]):
    return None if cfg is None else NECKS.build(cfg)


def build_head(cfg: Dict[str, Any]):
    return HEADS.build(cfg)


def build_loss(cfg: Dict[str, Any]):
    return LOSSES.build(cfg)


def build_model(cfg: Dict[str, Any]):
    """Build an architecture (``ImageClassifier``, an SSL model, ...) from ``cfg['name']``."""
    return MODELS.build(cfg)


def config_with_defaults(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``cfg`` with every documented default filled in (for ``--print-config``).

    Sections with fixed keys get their :class:`~passl_mixer.schema.Section` defaults (the
    schemas registered by the modules imported so far); each registry-built part (a mapping with
    a ``name``) gets the defaults of its constructor's signature.
    """
    registries = [BACKBONES, NECKS, HEADS, MODELS, LOSSES, DATASETS, TRANSFORMS, OPTIMIZERS,
                  LR_SCHEDULERS, LOGGERS]

    def part(name) -> Optional[Callable]:
        found = [reg._entries[name] for reg in registries if name in reg]
        return found[0] if len(found) == 1 else None

    def fill(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [fill(item, f"{path}[{i}]") for i, item in enumerate(node)]
        known = schema.SECTIONS.get(path)
        if node is None and known is not None and path:
            node = {}
        if not isinstance(node, dict):
            return node
        out = {k: fill(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if known is not None:
            for key, field in known.model_fields.items():
                if key not in out and not field.is_required():
                    out[key] = fill(field.get_default(), f"{path}.{key}" if path else key)
        target = part(node.get("name")) if isinstance(node.get("name"), str) else None
        if target is not None:
            for p in inspect.signature(target).parameters.values():
                if (p.name not in out and p.default is not p.empty
                        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                        and p.name not in ("transforms", "seed")):  # given by the loader
                    out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
        return out

    return fill(cfg, "")


# -- plugins ------------------------------------------------------------------------------
_loaded_plugins = set()  # (name, value) of the entry points already imported


def _plugin_entry_points():
    eps = importlib.metadata.entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return list(eps.select(group=PLUGIN_GROUP))
    return list(eps.get(PLUGIN_GROUP, []))  # Python 3.9


def load_plugins() -> None:
    """Import each ``passl_mixer.plugins`` entry point not imported yet.

    An entry point names a module (importing it runs its ``@REG.register()`` decorators) or a
    function, which is then called with no arguments to do its registrations. Registries call
    this when a name is not found, so plugins installed at any time are picked up. A plugin
    that fails to load is reported and skipped so that one broken package does not break all.
    """
    for ep in _plugin_entry_points():
        key = (ep.name, ep.value)
        if key in _loaded_plugins:
            continue
        _loaded_plugins.add(key)
        try:
            obj = ep.load()
            if inspect.isfunction(obj):
                obj()
        except Exception as exc:  # noqa: BLE001 - report and go on
            logger.warning("passl_mixer plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
            print(f"warning: passl_mixer plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                  file=sys.stderr)
