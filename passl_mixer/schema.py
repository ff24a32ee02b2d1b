"""Config validation: one mechanism for every key a config can hold.

A config holds two kinds of mapping, and each kind has one schema mechanism:

* **Sections with fixed keys** (``train``, ``amp``, ``distributed``, a data section, ...) are
  described by a :class:`Section`: a pydantic model whose fields give each key's type, range,
  default and help text. The module that reads a section defines it next to the code that reads
  it and registers it with :func:`section`, so ``tools/train.py --print-config`` can show every
  documented default; :func:`validate_section` checks a mapping against it.
* **Registry-built parts** (backbones, heads, transforms, optimizers, ...) are described by their
  constructor's signature: the annotations are the types (with ranges through the aliases below,
  e.g. ``num_blocks: PositiveInt``), the defaults are the defaults and the docstring is the help.
  :func:`check_call` validates the keys a config gives before the constructor runs.
  ``tests/test_schema.py`` checks that every registered part annotates every argument, so a new
  key cannot be added without its validation.

Every error is a :class:`ConfigError` that names the key by its full path in the config
(``model.backbone.num_blocks``), the value given and what was expected. Paths are found by
:func:`tracking`: the caller that holds the whole config (the trainer, a tool) wraps the build
in ``with tracking(cfg):``, and every mapping or list inside it is then known by its path, also
after :meth:`Registry.build` deep-copies it (see :func:`register_copy`).
"""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import inspect
import re
import typing
from typing import Any, Callable, Dict, Iterator, Optional, Type

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt,
                      PositiveFloat, PositiveInt, TypeAdapter, ValidationError)
from typing_extensions import Annotated

from .errors import ConfigError

# -- types with ranges, for annotations --------------------------------------------------------
Probability = Annotated[float, Field(ge=0.0, le=1.0)]          # a chance, 0..1
DropRate = Annotated[float, Field(ge=0.0, lt=1.0)]             # dropout / drop-path, [0, 1)
Decay = Annotated[float, Field(gt=0.0, lt=1.0)]                # EMA / momentum decay, (0, 1)

__all__ = ["Section", "section", "SECTIONS", "validate_section", "check_call", "tracking",
           "path_of", "register_copy", "check_value", "located", "Probability", "DropRate", "Decay", "PositiveInt",
           "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "Field"]


class Section(BaseModel):
    """A config section with fixed keys. Unknown keys are errors; every field has help text."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


#: path ("train", "data.train", ...) -> the Section describing it, for --print-config.
SECTIONS: Dict[str, Type[Section]] = {}


def section(path: str):
    """Class decorator: register a :class:`Section` as the schema of the config key ``path``."""
    def register(cls: Type[Section]) -> Type[Section]:
        SECTIONS[path] = cls
        return cls
    return register


def validate_section(schema: Type[Section], value: Any, path: str) -> Dict[str, Any]:
    """``value`` checked against ``schema``, with the defaults filled in (a new dict).

    ``None`` (a section left out, or written as an empty key) means all defaults.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise located(f"{path} must be a mapping of {', '.join(schema.model_fields)}, got "
                      f"{_show(value)}.", path)
    try:
        checked = schema.model_validate(value)
    except ValidationError as exc:
        raise located(_describe(exc, path, schema.model_fields, value), path) from None
    # keep the user's containers as they are (validated, not replaced by pydantic's copies)
    return {k: (value[k] if isinstance(value.get(k), (dict, list)) else v)
            for k, v in checked.model_dump().items()}


# -- registry-built parts: the signature is the schema -------------------------------------------
_ADAPTERS: Dict[Any, Dict[str, Any]] = {}


def _signature_schema(target: Callable):
    """{argument: (TypeAdapter or None, parameter)} for ``target``'s keyword arguments."""
    if target in _ADAPTERS:
        return _ADAPTERS[target]
    func = target.__init__ if inspect.isclass(target) else target
    params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: validate what we can
        hints = {}
    schema = {}
    for p in params:
        hint = hints.get(p.name)
        adapter = None
        if hint is not None:
            try:
                adapter = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
            except Exception:  # noqa: BLE001 - a type pydantic cannot check (e.g. a Layer)
                adapter = None
        schema[p.name] = (adapter, p)
    _ADAPTERS[target] = schema
    return schema


def check_call(target: Callable, kwargs: Dict[str, Any], path: str,
               what: Optional[str] = None, injected: typing.Iterable[str] = ()) -> Dict[str, Any]:
    """Validate the config keys ``kwargs`` for a call of ``target``; returns the kwargs to call
    it with (scalars converted, e.g. ``'1e-3'`` -> 0.001; containers passed as given).

    Unknown keys are answered with the accepted ones and the closest match, missing required
    keys by name, values of the wrong type or out of range with the key's path, the value and
    the expected type. ``injected`` names arguments the caller supplies itself (a model, the
    dataset's seed): they are not config keys and are passed through unchecked.
    """
    what = what or getattr(target, "__name__", str(target))
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return kwargs
    params = [p for p in params if p.name != "self"]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    accepted = [p.name for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in injected]
    if not takes_any:
        unknown = [k for k in kwargs if k not in accepted and k not in injected]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), accepted, n=1, cutoff=0.6)
                hints.append(_key(path, k) + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise located(f"{what}: unknown key(s) {', '.join(hints)}. "
                          f"Accepted keys: {', '.join(accepted) or '(none)'}.", path)
    missing = [p.name for p in params
               if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in kwargs and p.name not in injected]
    if missing:
        raise located(f"{path + ' ' if path else ''}({what}) is missing required key(s) "
                      f"{', '.join(repr(m) for m in missing)}.", path)
    schema = _signature_schema(target)
    out = dict(kwargs)
    problems = []
    for key, value in kwargs.items():
        adapter, param = schema.get(key, (None, None))
        if adapter is None or key in injected:
            continue
        try:
            checked = adapter.validate_python(value)
        except ValidationError as exc:
            problems.append(_one_problem(exc, _key(path, key), value, param))
            continue
        if not isinstance(value, (dict, list, tuple)):
            out[key] = checked
    if problems:
        raise located(f"{what}: " + "; ".join(problems) + ".", path)
    return out


def check_value(value: Any, kind: Any, path: str) -> Any:
    """One value checked against a type (with range), e.g. ``check_value(lr, PositiveFloat,
    'optimizer.lr')``; returns it converted."""
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise located(_one_problem(exc, path, value) + ".", path) from None


def _key(path: str, key: Any) -> str:
    """``model.backbone.num_blocks``; just ``'num_blocks'`` when the config path is unknown."""
    return f"{path}.{key}" if path else f"'{key}'"


# -- error text --------------------------------------------------------------------------------
def located(message: str, path: str) -> ConfigError:
    """A ConfigError whose message already names its config path (so callers add none)."""
    exc = ConfigError(message)
    exc.config_path = path
    return exc


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _one_problem(exc: ValidationError, path: str, value: Any, param=None) -> str:
    err = exc.errors()[0]
    where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]
                           if not _is_union_tag(p))
    msg = _plain(err["msg"])
    default = ""
    if param is not None and param.default not in (inspect.Parameter.empty, None):
        default = f" (default {param.default!r})"
    return f"{where} is {_show(value)}: {msg}{default}"


def _plain(msg: str) -> str:
    """pydantic's message, in lower case and without its internal class names."""
    msg = re.sub(r" or instance of \w+", "", msg or "invalid value")
    return msg[0].lower() + msg[1:]


def _is_union_tag(part) -> bool:
    # pydantic names the union member it tried ('int', 'list[int]'...): not a key of the config
    return isinstance(part, str) and any(ch in part for ch in "[]()") or part in (
        "int", "float", "str", "bool", "list", "tuple", "dict", "function-after")


def _describe(exc: ValidationError, path: str, fields, given: Dict[str, Any]) -> str:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not _is_union_tag(p)]
        key = loc[0] if loc else None
        where = ".".join(str(p) for p in [path] + loc if p != "")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key '{where}'{hint}; accepted keys of {path or 'a config'}: "
                            f"{', '.join(fields)}")
            continue
        msg = _plain(err["msg"])
        value = given.get(key, err.get("input")) if len(loc) == 1 else err.get("input")
        help_text = fields[key].description if key in fields else None
        problems.append(f"{where} is {_show(value)}: {msg}"
                        + (f" ({key}: {help_text})" if help_text else ""))
    return "; ".join(problems) + "."


# -- where is this mapping in the config? --------------------------------------------------------
_PATHS: contextvars.ContextVar[Optional[Dict[int, tuple]]] = contextvars.ContextVar(
    "passl_mixer_config_paths", default=None)


def _walk(node: Any, path: str, table: Dict[int, tuple]) -> None:
    if isinstance(node, (dict, list)):
        table[id(node)] = (node, path)  # the node itself is kept so that its id stays unique
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(node, list):
                _walk(child, f"{path}[{key}]", table)
            else:
                _walk(child, f"{path}.{key}" if path else str(key), table)


@contextlib.contextmanager
def tracking(cfg: Dict[str, Any], root: str = "") -> Iterator[None]:
    """Within this block, :func:`path_of` knows every mapping and list inside ``cfg``."""
    table: Dict[int, tuple] = dict(_PATHS.get() or {})
    _walk(cfg, root, table)
    token = _PATHS.set(table)
    try:
        yield
    finally:
        _PATHS.reset(token)


def path_of(node: Any) -> Optional[str]:
    """The config path of a mapping or list inside the tracked config, or None."""
    table = _PATHS.get()
    if not table:
        return None
    entry = table.get(id(node))
    return entry[1] if entry is not None and entry[0] is node else None


def register_copy(original: Any, copy: Any) -> None:
    """Make ``copy`` (a deep copy of a tracked ``original``) known under the same paths."""
    table = _PATHS.get()
    path = path_of(original)
    if table is not None and path is not None:
        _walk(copy, path, table)
