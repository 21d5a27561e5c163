"""Typed config loading: plain dataclasses in, field-named errors out.

Every config format in tokenmill (job spec, training config) is a tree of dataclasses.
`from_dict` builds one from parsed YAML/JSON, rejecting unknown keys and wrong types with
a `SpecError` that names the dotted field path, and `set_dotted` applies `--set a.b=c`
overrides before validation.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class SpecError(ValueError):
    """An invalid config: the message starts with the dotted path of the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise SpecError(path, "must not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except SpecError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise SpecError(path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise SpecError(path, f"expected one of {list(allowed)}, got {_describe(value)}")
        return value
    if value is None:
        raise SpecError(path, "must not be null")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpecError(path, f"expected a list, got {_describe(value)}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise SpecError(path, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(path, f"expected a mapping, got {_describe(value)}")
        return dict(value)
    return _scalar(tp, value, path)


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(path, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(where, f"unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, field in fields.items():
        where = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(where, "required field is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=VALUE` override; VALUE is parsed as YAML (so `3`, `null`, `[1,2]` work)."""
    if "=" not in assignment:
        raise SpecError("--set", f"expected KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError("--set", f"bad key {key!r}")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(".".join(parts[: i + 1]), "is not a mapping, cannot set a field inside it")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping, turning parse errors into SpecError."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise SpecError("", f"spec file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("", f"{path} must hold a YAML mapping at the top level")
    return data


__all__ = ["SpecError", "from_dict", "to_dict", "set_dotted", "load_yaml"]
