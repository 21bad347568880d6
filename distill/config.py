"""Experiment configs: YAML files of plain data loaded into frozen dataclasses.

``load(cls, path, overrides)`` reads a YAML mapping, applies ``key=value`` overrides
(dotted keys for nested sections, values parsed as YAML scalars), and builds ``cls``.
Unknown keys and wrongly typed values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runtime.errors import ConfigError

T = TypeVar("T")


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build dataclass ``cls`` from an optional YAML file plus ``key=value`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values")
        data = loaded or {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. epochs=10)")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return from_dict(cls, data, source)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build ``cls`` from a mapping, recursing into nested dataclass fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, source, key) for v in value)
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans
        return "on" if value else "off"
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{source}: {key} must be {tp.__name__}, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists), for checkpoints and logs."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))
