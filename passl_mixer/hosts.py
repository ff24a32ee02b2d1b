"""Registering this package's models into a host framework's registry.

A framework that builds its backbones by name from its own registry (PASSL v1, or anything with
the same interface) can use the Mixer without knowing this package:

    from passl.models.backbones import BACKBONES   # the host's registry
    import passl_mixer
    passl_mixer.register_into(BACKBONES)              # now BACKBONES.get("MlpMixer") works
    passl_mixer.register_into(HEADS, kind="head")     # LinearClsHead too, if wanted

The host registry needs PASSL v1's interface: ``register(obj)`` (the name is ``obj.__name__``),
``register(obj, name=...)`` (only when a ``prefix`` is given) and ``get(name)`` (raising
KeyError, or returning None, for an unknown name). The other direction -- other packages adding
backbones to *this* package's registries -- goes through the ``passl_mixer.plugins`` entry
points (see :func:`passl_mixer.registry.load_plugins`).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .errors import ConfigError, RegistryError
from .registry import BACKBONES, HEADS, NECKS, Registry

KINDS = {"backbone": BACKBONES, "neck": NECKS, "head": HEADS}


def _lookup(registry: Any, name: str):
    """The host's entry for ``name``, or None (hosts signal "unknown" by KeyError or None)."""
    try:
        return registry.get(name)
    except KeyError:
        return None


def register_into(registry: Any, kind: str = "backbone", names: Optional[Sequence[str]] = None,
                  prefix: str = "") -> List[str]:
    """Register this package's ``kind`` classes into a host ``registry``; return the names used.

    Args:
        registry: the host's registry object (see the module doc for the interface).
        kind: 'backbone' (default: MlpMixer and any plugin backbones), 'neck' or 'head'.
        names: only these classes (default: all of ``kind`` registered here).
        prefix: register as ``prefix + name``, e.g. ``"PM"`` -> ``PMMlpMixer``, when the host
            already has a class of that name.

    Registering again is a no-op; a name the host already uses for a different class raises a
    RegistryError that suggests a ``prefix``.
    """
    if kind not in KINDS:
        raise ConfigError(f"register_into: kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    source: Registry = KINDS[kind]
    chosen = list(source.keys()) if names is None else list(names)
    registered = []
    for name in chosen:
        obj = source.get(name)  # an unknown name raises here, listing the known ones
        key = prefix + name
        existing = _lookup(registry, key)
        if existing is obj:
            registered.append(key)
            continue
        if existing is not None:
            raise RegistryError(
                f"The host registry already has a different '{key}' ({existing!r}); pass a "
                f"prefix, e.g. register_into(registry, prefix='PM') registers 'PM{name}'.")
        if prefix:
            registry.register(obj, name=key)
        else:
            registry.register(obj)
        registered.append(key)
    return registered
