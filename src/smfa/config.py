"""Config dataclasses from YAML recipes with command-line overrides (the resolved config goes into the
run's manifest). One small mechanism for every stage: ``resolve_config(Cls, yaml_path, overrides)``;
:func:`parse_params` reads the ``--param KEY=VALUE`` method hyper-parameter overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from smfa.errors import ConfigError

T = TypeVar("T")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if hint in (int, float, str, bool):
        if hint is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"config field {name!r} expects true/false, got {value!r}")
        if hint is int and isinstance(value, float) and not value.is_integer():  # int(1.5) would truncate silently
            raise ConfigError(f"config field {name!r} expects an integer, got {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field {name!r} expects {hint.__name__}, got {value!r}") from exc
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        items = [_coerce(name, v, inner) if inner in (int, float, str, bool) else v for v in value]
        return tuple(items) if origin is tuple else items
    if args and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(name, value, inner[0])
    return value


def resolve_config(
    cls: type[T],
    yaml_path: str | Path | list[str | Path | None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Defaults ← YAML recipe(s), later ones winning ← overrides (``None`` in overrides means "not given")."""
    import yaml

    values: dict[str, Any] = {}
    paths = yaml_path if isinstance(yaml_path, list) else [yaml_path]
    for item in paths:
        if not item:
            continue
        path = Path(item)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of field: value")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` items as ``{key: value}``: dashes in a key become underscores, each value is
    read as YAML (``3`` an int, ``true`` a bool, ``[a, b]`` a list)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out
