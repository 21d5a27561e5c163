"""Typed config loading: pydantic models in, field-named errors out.

Every config format in tokenmill (job spec, training config) is a tree of `Config` models.
`from_dict` validates parsed YAML/JSON as the JSON it is, in strict mode: lists fill tuple
fields and integers fill float fields, nothing else is coerced (a bool is not an int, a
string is not a number). So the JSON Schema `json_schema` prints describes exactly the check
the loader makes. Any problem becomes one `SpecError` naming the dotted field path;
`set_dotted` applies `--set a.b=c` overrides before validation.

A model's cross-field checks live in its `validate(self, path)` method, run after its fields
are validated. It raises `SpecError(f"{path}.name", ...)`: `path` is "" there, and the loader
puts where the model sits in front (`clips.num_frames`).
"""

from __future__ import annotations

import json
import re
import types
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails

C = TypeVar("C", bound="Config")


class SpecError(ValueError):
    """An invalid config: the message starts with the dotted path of the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class Config(BaseModel):
    """Base of every config model: strict types, unknown keys rejected, `validate` run last."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="after")
    def _cross_field_checks(self) -> Config:
        self.validate("")
        return self

    def validate(self, path: str) -> None:  # type: ignore[override]  # shadows v1 BaseModel.validate
        """Checks across fields, or of ranges; raise SpecError(f"{path}.field", message)."""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _join(path: str, field: str) -> str:
    if not path or not field:
        return (path or field).lstrip(".")
    return path + field if field.startswith((".", "[")) else f"{path}.{field}"


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    """The fields of the Config model an annotation holds (`ExportSpec | None` too), else None."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, Config):
            return option.model_fields
    return None


def _walk(model: type[Config], loc: tuple[int | str, ...]) -> tuple[str, dict[str, Any] | None]:
    """pydantic's error location -> (dotted field path, fields of the model there, if one is).

    Union member tags in the location ("int", "literal['auto']") are not fields: dropped.
    """
    path, fields = "", _model_fields(model)
    for part in loc:
        if isinstance(part, int):
            path, fields = f"{path}[{part}]", None
        elif fields is not None and part in fields:
            path, fields = _join(path, part), _model_fields(fields[part].annotation)
    return path, fields


def _field_and_message(model: type[Config], error: ErrorDetails) -> tuple[str, str]:
    loc = tuple(error["loc"])
    path, _ = _walk(model, loc)
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SpecError):  # raised by validate() of the model at loc
        return _join(path, cause.field), cause.message
    if error["type"] == "extra_forbidden":
        where, fields = _walk(model, loc[:-1])
        return _join(where, str(loc[-1])), f"unknown key (allowed: {', '.join(fields or ())})"
    if error["type"] == "missing" and loc and isinstance(loc[-1], int):  # a tuple too short
        return _walk(model, loc[:-1])[0], f"too few items, got {_describe(error['input'])}"
    if error["type"] == "missing":
        return path, "required field is missing"
    message = error["msg"].removeprefix("Input ").removeprefix("Tuple ").split(" after validation")[0]
    return path, message.replace("a valid array", "a list").replace("an object", "a mapping")


def _spec_error(exc: ValidationError, model: type[Config], prefix: str) -> SpecError:
    """The first failing field, with what each alternative of a union expected."""
    errors = exc.errors()
    found = [_field_and_message(model, e) for e in errors]
    # a union's alternatives fail together: report the deepest (`shards[1]` over `shards`)
    first = found[0][0]
    deeper = [i for i, (f, _) in enumerate(found) if f.startswith((f"{first}.", f"{first}["))]
    index = max(deeper, key=lambda i: len(found[i][0]), default=0)
    field, message = found[index]
    if message.startswith("should"):
        alternatives = [m.removeprefix("should be ") for f, m in found[index + 1:] if f == field]
        message = " or ".join(dict.fromkeys([message, *alternatives]))
        message += f", got {_describe(errors[index]['input'])}"
    return SpecError(_join(prefix, field), message)


def from_dict(cls: type[C], data: Any, path: str = "") -> C:
    """Validate parsed YAML/JSON into model `cls`; unknown keys and wrong types raise SpecError.

    `path` is where `data` sits in a larger config, put in front of every field named.
    """
    try:
        return cls.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        raise _spec_error(exc, cls, path) from None


def to_dict(obj: Config) -> dict[str, Any]:
    """Model tree -> plain JSON-able data (tuples become lists), in field order."""
    return obj.model_dump(mode="json")


def json_schema(cls: type[Config], title: str) -> dict[str, Any]:
    """The JSON Schema of a config file: editors complete and check the YAML with it."""
    schema = cls.model_json_schema()  # of validation in JSON mode: what from_dict checks
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": title}


class _Loader(yaml.SafeLoader):
    """YAML as users write it: `1e-4` is a number (YAML 1.2), not the string YAML 1.1 makes of it."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _parse(text: Any) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


def set_dotted(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=VALUE` override; VALUE is parsed as YAML (so `3`, `1e-4`, `null`, `[1,2]` work)."""
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
    node[parts[-1]] = _parse(raw) if raw.strip() else ""


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping, turning parse errors into SpecError."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = _parse(fh)
    except FileNotFoundError:
        raise SpecError("", f"spec file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("", f"{path} must hold a YAML mapping at the top level")
    return data


__all__ = ["SpecError", "Config", "from_dict", "to_dict", "json_schema", "set_dotted", "load_yaml"]
