"""Reading a configuration document (YAML or TOML) into a mapping, with errors that say
where: the one reader of the config loader (warden/config.py) and of calendar files
(warden/calendar.py), which the site model includes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, ValidationInfo

CONFIG_FOLDER = "config_folder"


def in_config_folder(value: Path, info: ValidationInfo) -> Path:
    """`value` taken from the folder of the file being loaded (load_config's context), if relative."""
    base = (info.context or {}).get(CONFIG_FOLDER)
    return value if base is None or value.is_absolute() else base / value


#: A path in a configuration file: a relative one is taken from the file's folder, so a
#: config works from whatever directory the process was started in.
ConfigPath = Annotated[Path, AfterValidator(in_config_folder)]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and why."""


def read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # here: a process whose config is YAML, as most agents', never needs it

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: expected a .yaml, .yml or .toml file")
    except yaml.MarkedYAMLError as exc:  # one line, with the position in the file
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ", ".join(str(m) for m in (exc.context, exc.problem) if m) or str(exc)
        raise ConfigError(f"{path}: not valid YAML: {where}{what}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: also an impossible date like 2026-02-30
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    if _contains_itself(data):  # e.g. a YAML alias inside its own anchor: a: &a [*a]
        raise ConfigError(f"{path}: nested too deeply (does a YAML alias refer to itself?)")
    return data


def _contains_itself(node: Any, inside: frozenset[int] = frozenset()) -> bool:
    if not isinstance(node, (dict, list)):
        return False
    if id(node) in inside:
        return True
    children = node.values() if isinstance(node, dict) else node
    return any(_contains_itself(child, inside | {id(node)}) for child in children)
