"""Load a typed config from YAML files and `key=value` overrides; save the resolved config.

Rules:
- A YAML file may name `_base_: other.yaml` (or a list); bases load first, the file overrides them.
- Every key must exist in the schema: an unknown key is an error naming the key, the file, and the nearest
  valid key.
- Values are checked against the field type (int, float, bool, str, Literal choices, lists).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from synctalk.errors import ConfigError
from synctalk.io.atomic import atomic_write_text
from synctalk.io.outputs import RESOLVED_CONFIG_HEADER

log = logging.getLogger("synctalk.config")
T = TypeVar("T")
CONFIG_FILENAME = "config.yaml"
BASE_KEY = "_base_"


def configs_dir() -> Path:
    """The project's `configs/` folder (named recipes)."""
    return Path(__file__).resolve().parents[2] / "configs"


def find_config(name_or_path: str | Path) -> Path:
    """Resolve a config argument: an existing file path, or a recipe name in configs/ (`demo` → demo.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipe = configs_dir() / f"{name_or_path}.yaml"
    if recipe.is_file():
        return recipe
    known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    hint = _did_you_mean(str(name_or_path), known)
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a recipe in {configs_dir()}{hint}; "
                      f"recipes: {', '.join(known) or 'none'}")


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `schema` from defaults, then the YAML file (with its bases), then `key=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml_with_bases(schema, find_config(path), seen=())
    for key, value in parse_overrides(overrides or []).items():
        key = _moved_key(schema, key, source=f"override '{key}=...'")
        _check_keys(schema, {key: value}, source=f"override '{key}=...'")
        _set_dotted(values, key, value)
    return _build(schema, values, prefix="")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["a.b=3", "c=[1, 2]"]` → `{"a.b": 3, "c": [1, 2]}`; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. preprocess.fps=30)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc.problem})") from None
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, out_dir: str | Path, filename: str = CONFIG_FILENAME) -> Path:
    """Write the resolved config as plain YAML (loadable with `load_config(type(cfg), path)`)."""
    from synctalk import __version__

    path = Path(out_dir) / filename
    text = f"{RESOLVED_CONFIG_HEADER} {__version__} config\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)
    return path


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """All dotted keys of a schema, sections included: `["seed", "preprocess", "preprocess.fps", ...]`."""
    keys = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(schema_keys(hints[f.name], key + "."))
    return keys


def _read_yaml_with_bases(schema: type, path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config files include each other in a loop: {chain}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    _move_keys(schema, data, source=str(path))
    _check_keys(schema, data, source=str(path))
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found (looked at {base_path})")
        _deep_update(merged, _read_yaml_with_bases(schema, base_path, (*seen, path)))
    _deep_update(merged, data)
    return merged


def _moved_key(schema: type, key: str, source: str) -> str:
    """A dotted key of an older config → its current name (with a warning), else the key itself."""
    new = getattr(schema, "MOVED_KEYS", {}).get(key)
    if new is None:
        return key
    log.warning("config key '%s' is now '%s' (%s); please rename it", key, new, source)
    return new


def _move_keys(schema: type, values: dict[str, Any], source: str) -> None:
    """Rename, in place, the keys of a nested config mapping that moved (``schema.MOVED_KEYS``)."""
    for old in getattr(schema, "MOVED_KEYS", {}):
        *parents, leaf = old.split(".")
        node = values
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            value = node.pop(leaf)
            new = _moved_key(schema, old, source)
            if _get_dotted(values, new) is None:
                _set_dotted(values, new, value)


def _get_dotted(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_keys(schema: type, values: dict[str, Any], source: str) -> None:
    """Raise on the first key of `values` (nested or dotted) that the schema does not have."""
    valid = schema_keys(schema)
    sections = {k for k in valid if _is_section(schema, k)}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            full = prefix + str(key)
            if full not in valid:
                raise ConfigError(f"unknown key '{full}'{_did_you_mean(full, valid)} in {source}")
            if isinstance(value, dict) and full in sections:
                walk(value, full + ".")

    walk(values, "")


def _is_section(schema: type, dotted: str) -> bool:
    node: Any = schema
    for part in dotted.split("."):
        node = typing.get_type_hints(node)[part]
    return dataclasses.is_dataclass(node)


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value


def _set_dotted(values: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = values
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _did_you_mean(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _build(schema: type[T], values: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        hint, value, key = hints[f.name], values[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"'{key}' is a section; set its keys (e.g. {key}.<key>=...), not a value")
            kwargs[f.name] = _build(hint, value, key + ".")
        else:
            kwargs[f.name] = _check_range(_coerce(value, hint, key), f.metadata, key)
    return schema(**kwargs)


def _check_range(value: Any, metadata: Any, key: str) -> Any:
    """``value`` when it is within the field's bounds (``knob(..., at_least=, above=, at_most=, below=)``), else a
    ConfigError naming the key, the allowed range and the value."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    tests = {"at_least": (lambda v, b: v >= b, ">="), "above": (lambda v, b: v > b, ">"),
             "at_most": (lambda v, b: v <= b, "<="), "below": (lambda v, b: v < b, "<")}
    bounds = [(name, metadata[name]) for name in tests if metadata.get(name) is not None]
    if all(tests[name][0](value, bound) for name, bound in bounds):
        return value
    allowed = " and ".join(f"{tests[name][1]} {bound:g}" if isinstance(bound, float) else f"{tests[name][1]} {bound}"
                           for name, bound in bounds)
    raise ConfigError(f"'{key}' must be {allowed}, got {value!r}; set it with {key}=VALUE (or in the config file)")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"'{key}' must be {expected}, got {value!r}")

    if hint is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            hint_text = _did_you_mean(str(value), [str(a) for a in args])
            raise ConfigError(f"'{key}' must be one of {', '.join(map(str, args))}; got {value!r}{hint_text}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise fail(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise fail(f"a list (e.g. {key}=[1, 2])")
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise fail("an integer")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-2 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"'{key}': unsupported config type {hint} (schema bug)")
