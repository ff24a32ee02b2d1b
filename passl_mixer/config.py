"""YAML configs: safe loading, ``_base_`` inheritance and ``-o key=value`` overrides.

A config file is a plain mapping. ``_base_: [a.yaml, b.yaml]`` (paths relative to the file)
loads those first and deep-merges them in order, then merges this file on top: mappings merge
key by key, everything else (lists included) is replaced by the later value. A mapping that
sets ``_delete_: true`` replaces the inherited mapping instead of merging into it.

Overrides use dotted paths, with integers indexing lists: ``-o optimizer.lr=0.01``,
``-o data.train.transforms.0.size=32``. The value is parsed as one YAML scalar (or flow
collection, e.g. ``[0.5, 0.5]``) with the safe loader — never ``eval``. New keys may be added to
mappings; list indices must exist.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Dict, Iterable, List, Optional

import yaml

from .errors import ConfigError
from .fileio import read_text, require_file, write_text

BASE_KEY = "_base_"


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def safe_load(text_or_stream):
    """``yaml.safe_load`` with scientific-notation floats; no Python objects are ever built."""
    return yaml.load(text_or_stream, Loader=_Loader)
DELETE_KEY = "_delete_"


CONFIG_EXPECTED = "a YAML config file"


def load_yaml(path: str, what: str = "Config file") -> Any:
    """Read one YAML file with the safe loader; errors name the file and line. A missing file,
    a directory or a binary file (a checkpoint or image given by mistake) is a ConfigError
    naming it."""
    text = read_text(path, what, ConfigError, CONFIG_EXPECTED,
                     inside=("config.yaml", "model.yaml"))
    try:
        return safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        raise ConfigError(f"YAML syntax error in {where}: {exc.problem or exc}. "
                          f"{exc.context or ''}".strip()) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot read YAML file '{path}': {exc}") from None


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; later wins, lists are replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and value.get(DELETE_KEY):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != DELETE_KEY}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: str, chain: List[str]) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in chain:
        cycle = " -> ".join(chain[chain.index(path):] + [path])
        raise ConfigError(f"_base_ files include each other in a cycle: {cycle}.")
    data = load_yaml(path)
    if data is None and not chain:  # the file given with -c: empty or only comments
        raise ConfigError(f"Config file '{path}' is empty (or only comments); expected "
                          f"{CONFIG_EXPECTED} holding a mapping of sections (model, data, "
                          f"optimizer, ...).")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' holds a {type(data).__name__} at the top level; "
                          f"expected {CONFIG_EXPECTED} holding a mapping of sections (model, "
                          f"data, optimizer, ...).")
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"'{BASE_KEY}' in '{path}' must be a file name or a list of file names, "
                          f"got {bases!r}.")
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        require_file(base_path, f"'{path}' names _base_ file '{base}':",
                     ConfigError, CONFIG_EXPECTED)
        merged = merge(merged, _load_with_bases(base_path, chain + [path]))
    return merge(merged, data)


def parse_override(text: str):
    """Split ``a.b.0.c=value`` into (['a','b','0','c'], parsed value)."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' is malformed: expected KEY=VALUE, e.g. "
                          f"'optimizer.lr=0.01'.")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(p == "" for p in parts):
        raise ConfigError(f"Override '{text}' has an empty key part in '{key}': expected dotted "
                          f"keys like 'data.train.batch_size'.")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Override '{text}': the value '{raw}' is not a valid YAML scalar or "
                          f"flow collection ({exc.__class__.__name__}).") from None
    return parts, value


def apply_override(cfg: Dict[str, Any], text: str) -> None:
    """Apply one ``key.path=value`` override to ``cfg`` in place."""
    parts, value = parse_override(text)
    node: Any = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "<top level>"
        if isinstance(node, list):
            try:
                idx = int(part)
            except ValueError:
                raise ConfigError(f"Override '{text}': '{where}' is a list, so '{part}' must be "
                                  f"an integer index (0..{len(node) - 1}).") from None
            if not -len(node) <= idx < len(node):
                raise ConfigError(f"Override '{text}': index {idx} is out of range for "
                                  f"'{where}', which has {len(node)} item(s).")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node or node[part] is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"Override '{text}': '{where}' is a {type(node).__name__} "
                              f"({node!r}), so it has no key '{part}'.")


def load_config(path: str, overrides: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Load ``path`` with its ``_base_`` files, then apply ``overrides`` (``KEY=VALUE`` strings)."""
    cfg = _load_with_bases(path, [])
    for text in overrides or []:
        apply_override(cfg, text)
    return cfg


def dump_config(cfg: Dict[str, Any], path: str) -> None:
    """Write ``cfg`` as YAML atomically (temp file, then rename)."""
    write_text(path, yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))

