"""The project's own console scripts, found beside the running interpreter.

Never on PATH: a `warden` of another install (a pyenv shim, a user site, an older
checkout) found there first would be tested instead, and a fresh machine has none at all
(`.ci/run` checks that the suite passes with PATH holding no warden)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


class MissingConsoleScript(RuntimeError):
    """The environment running the tests has not installed this project (pip install -e .)."""


def console_script(name: str) -> str:
    """Path of this environment's console script `name` (e.g. `warden`, `warden-agent`).

    `sys.executable` is not resolved: a virtualenv's `bin/python` is a symlink to the base
    interpreter, and the scripts live beside the link, not beside its target."""
    beside = Path(sys.executable).parent / name
    if not beside.is_file():
        raise MissingConsoleScript(
            f"{name} is not installed beside {sys.executable} (looked for {beside}); "
            "install this project into the environment running the tests: `make setup`, or `pip install -e '.[embedded,test]'`"
        )
    return str(beside)


def find_program(env_var: str, *names: str) -> Path | None:
    """A system program the tests need (Chromium, VictoriaMetrics): `env_var` if set (e.g. a
    downloaded release in CI), else the first of `names` on PATH, else None. Looked up, never
    assumed at a fixed install location, so the caller can fail naming what to install."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None
