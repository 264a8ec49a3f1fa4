"""Find every msgid the code and templates use, and bring the catalogues up to date.

    python -m warden.locales.extract          # add new msgids (empty msgstr) to every .po, drop none
    python -m warden.locales.extract --check  # exit 1 naming msgids a catalogue lacks or leaves untranslated

A msgid is the first argument, a string literal, of Message(...), _(...), N_(...) or
gettext(...) in Python files of the packages, or of _(...) in the Jinja templates
(jinja2's own Babel extractor). tests/test_i18n.py runs the check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("warden", "agent", "rules", "gateway", "simulators", "cli")
MARKERS = {"Message", "_", "N_", "gettext"}
LOCALES = Path(__file__).resolve().parent


def python_msgids(files: Iterable[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if isinstance(node.func, ast.Call) and getattr(node.func.func, "id", None) == "gettext_for":
                name = "_"  # gettext_for(locale)("...")
            first = node.args[0]
            if name in MARKERS and isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
                found.setdefault(first.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def template_msgids(files: Iterable[Path]) -> dict[str, list[str]]:
    from jinja2.ext import babel_extract

    found: dict[str, list[str]] = {}
    for path in files:
        with path.open("rb") as handle:
            for line, _function, message, _comments in babel_extract(handle, ("_", "gettext"), [], {}):
                text = message if isinstance(message, str) else (message[0] if message else None)
                if text:
                    found.setdefault(text, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def all_msgids(root: Path = ROOT) -> dict[str, list[str]]:
    files = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    found = python_msgids(files)
    for msgid, where in template_msgids(sorted((root / "gateway" / "web" / "templates").glob("*.html"))).items():
        found.setdefault(msgid, []).extend(where)
    return found


def catalogues() -> list[Path]:
    return sorted(LOCALES.glob("*/LC_MESSAGES/warden.po"))


def update(path: Path, msgids: dict[str, list[str]]) -> int:
    """Add missing msgids to one catalogue (translations kept, obsolete ones kept too); how many were added."""
    with path.open("rb") as handle:
        catalog = read_po(handle)
    added = 0
    for msgid in sorted(msgids):
        if msgid not in catalog:
            catalog.add(msgid, "", locations=[(w.rsplit(":", 1)[0], int(w.rsplit(":", 1)[1])) for w in msgids[msgid][:3]],
                        flags=("python-brace-format",) if "{" in msgid else ())
            added += 1
    with path.open("wb") as handle:
        write_po(handle, catalog, width=0, omit_header=False, sort_output=False, include_previous=False)
    return added


def missing(path: Path, msgids: Iterable[str]) -> list[str]:
    with path.open("rb") as handle:
        catalog: Catalog = read_po(handle)
    return [m for m in sorted(msgids) if m not in catalog or not catalog[m].string]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    msgids = all_msgids()
    status = 0
    for path in catalogues():
        if args.check:
            lacking = missing(path, msgids)
            for msgid in lacking:
                sys.stderr.write(f"{path.relative_to(ROOT)}: no translation for {msgid!r}\n")
            status |= bool(lacking)
        else:
            sys.stdout.write(f"{path.relative_to(ROOT)}: {update(path, msgids)} msgids added\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
