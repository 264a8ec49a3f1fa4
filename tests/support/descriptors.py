"""The test process's open file descriptors, counted per test module (tests/conftest.py).

Why: paho and the agent's serial lines wait in select(), which refuses any descriptor
numbered 1024 or more; a suite that leaks a hundred per module fails in its last modules
("filedescriptor out of range in select()"), far from the leak. The guard names the module.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from pathlib import Path

_FD_DIR = Path("/proc/self/fd")

#: What one module may leave open for later ones: session fixtures first used in it (a
#: broker, a browser) take a few; real leaks were 20-120 per module.
MODULE_ALLOWANCE = 40
#: The whole process, at any module's end: far below select()'s 1024.
SUITE_CEILING = 300


def available() -> bool:
    return _FD_DIR.is_dir()


def open_count() -> int:
    """Open descriptors now, once the garbage collector has closed what nothing refers to."""
    gc.collect()
    return len(os.listdir(_FD_DIR))


def kinds() -> Counter[str]:
    """The open descriptors by kind (socket, pipe) or by file suffix (.db, .db-wal), for the failure message."""
    found: Counter[str] = Counter()
    for fd in os.listdir(_FD_DIR):
        try:
            target = os.readlink(_FD_DIR / fd)
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith("/"):
            found["file " + (Path(target).suffix or Path(target).name)] += 1
        else:
            found[target.split(":")[0]] += 1
    return found


def clear_fastapi_caches() -> None:
    """Forget the endpoint functions FastAPI's dependency resolver caches module-wide (4096
    per cache in fastapi.dependencies.models). They are closures over the app's Gateway, so
    each app a test builds stayed alive after the test, holding its MQTT client's
    socketpair and its stores: hundreds of descriptors over the API tests. A gateway
    process builds one app, so this is the tests' concern only."""
    try:
        from fastapi.dependencies import models
    except ImportError:
        return
    for value in vars(models).values():
        clear = getattr(value, "cache_clear", None)
        if callable(clear) and getattr(value, "__module__", None) == models.__name__:
            clear()
