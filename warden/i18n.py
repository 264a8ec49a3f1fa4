"""Localisation: gettext catalogues (Babel), messages kept as an id and parameters, and
dates, numbers and money formatted by locale.

Catalogues are the .po files in warden/locales/<locale>/LC_MESSAGES/warden.po, compiled
in memory on first use (no build step, nothing to forget when packaging). A msgid is the
English text with named `str.format` fields, so English needs no catalogue and any
missing translation falls back to it. Rules build a `Message`: a str (the English text
they always produced, which tests and logs read) that also carries its id and
parameters, so the alert store keeps the facts and a screen renders them in any locale.
docs/localisation.md explains how to add a string or a language.
"""

from __future__ import annotations

import gettext
import string
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

# Babel is imported where it is used: the agent loads warden.config (and so this module) but
# never formats or translates, and a small board has no memory to spare for CLDR's tables.

DEFAULT_LOCALE = "en"
DOMAIN = "warden"

#: Locales with a shipped catalogue (English is the msgids themselves).
SUPPORTED_LOCALES = ("en", "zh-CN")

#: A site's money when its tariff names none: by the site's locale, else euros (the
#: currency every site had before locales existed).
LOCALE_CURRENCY = {"zh-CN": "CNY", "zh": "CNY"}
DEFAULT_CURRENCY = "EUR"

Param = str | int | float
Params = dict[str, Any]  # values: Param, or a nested message as {"id": ..., "params": {...}}


def normalise_locale(value: str) -> str:
    """A locale as written in files and headers, 'zh-CN' (BCP 47), from 'zh_CN', 'zh-cn' or 'ZH-cn';
    ValueError for one Babel does not know, naming it."""
    text = str(value).strip().replace("_", "-")
    if text in SUPPORTED_LOCALES:
        return text  # the usual case, without loading CLDR data
    from babel import Locale, UnknownLocaleError

    try:
        parsed = Locale.parse(text, sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"expected a locale like 'en' or 'zh-CN', got {value!r}") from None
    return f"{parsed.language}-{parsed.territory}" if parsed.territory else parsed.language  # no script: zh-CN, not zh-Hans-CN


def babel_locale(locale: str) -> str:
    """Babel's spelling ('zh_CN'); English formats as en-GB, the 24-hour, day-first style
    warden's English screens always used."""
    return "en_GB" if locale in ("en", "") else locale.replace("-", "_")


def currency_for(locale: str) -> str:
    return LOCALE_CURRENCY.get(locale, LOCALE_CURRENCY.get(locale.split("-")[0], DEFAULT_CURRENCY))


def pick_locale(accept_language: str | None, default: str) -> str:
    """The best shipped locale for an Accept-Language header ('zh-CN,zh;q=0.9,en;q=0.8'), else `default`."""
    if not accept_language:
        return default
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(accept_language.split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        ranked.append((-weight, n, tag.strip()))
    for _, _, tag in sorted(ranked):
        for locale in SUPPORTED_LOCALES:
            if tag.lower() == locale.lower() or tag.lower().split("-")[0] == locale.lower().split("-")[0]:
                return locale
    return default


# --------------------------------------------------------------------------- catalogues


@lru_cache(maxsize=None)
def translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalogue of `locale` (or of its language), or the identity for English
    and for locales without one: a msgid is its own English text."""
    for candidate in (locale.replace("-", "_"), locale.split("-")[0]):
        po = resources.files("warden").joinpath("locales", candidate, "LC_MESSAGES", f"{DOMAIN}.po")
        if po.is_file():
            return _compile(po.read_bytes(), candidate)
    return gettext.NullTranslations()


def _compile(po_bytes: bytes, locale: str) -> gettext.GNUTranslations:
    """A .po file compiled in memory to gettext's binary form, then read by the standard library."""
    import io

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(po_bytes), locale=locale, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def gettext_for(locale: str) -> Callable[[str], str]:
    """The translator of a locale: `_ = gettext_for("zh-CN"); _("Alerts")`."""
    return translations(locale).gettext


# --------------------------------------------------------------------------- messages


class Message(str):
    """An English text that remembers how it was made: `id` (the English template with
    `{named}` fields, also the gettext msgid) and `params`. Being a str, it goes wherever
    rules passed text before; the alert store reads `id` and `params` off it."""

    id: str
    params: Params

    def __new__(cls, template: str, /, **params: Any) -> Message:
        text = super().__new__(cls, template.format(**params))
        text.id = template
        text.params = {key: _plain(value) for key, value in params.items()}
        return text


def _plain(value: Any) -> Any:
    """A parameter as JSON keeps it: a nested message becomes {"id", "params"}."""
    if isinstance(value, Message):
        return {"id": value.id, "params": value.params}
    return value


#: Parameters that name something of the site, and how a name is looked up for them.
NAMED_PARAMS = ("room", "building", "device", "door", "route", "checkpoint", "agent")



def render(message_id: str, params: Mapping[str, Any], locale: str, names: Names | None = None) -> str:
    """The message in `locale`: its translated template filled with the parameters; ids of
    rooms, doors, devices, ... shown by name where `names` knows one. A template whose
    translation does not fit the parameters falls back to English rather than failing."""
    if not message_id:
        return ""  # gettext's "" is the catalogue header, never a message
    _ = gettext_for(locale)
    values: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and "id" in value:
            values[key] = render(str(value["id"]), value.get("params", {}), locale, names)
        elif names is not None and key in NAMED_PARAMS and isinstance(value, str):
            values[key] = names(key, value)
        else:
            values[key] = value
    for template in (_(message_id), message_id):
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            continue
    return message_id


def template_fields(template: str) -> set[str]:
    """The named fields of a template, to check a translation uses the same ones."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


# --------------------------------------------------------------------------- names

# Display names (what is looked up and how a label reads) are warden/names.py's; the
# lookup is re-exported here, where messages and reports have always imported it.
from warden.names import Names, display_name, name_table, site_names  # noqa: E402, F401

# --------------------------------------------------------------------------- formatting


def format_datetime(value: datetime, locale: str, zone: ZoneInfo | None = None, width: str = "medium") -> str:
    from babel.dates import format_datetime as babel_format

    return babel_format(value, width, tzinfo=zone, locale=babel_locale(locale))


def format_date(value: date | datetime, locale: str, width: str = "long") -> str:
    from babel.dates import format_date as babel_format

    return babel_format(value, width, locale=babel_locale(locale))


def format_time(value: datetime, locale: str, zone: ZoneInfo | None = None, width: str = "short") -> str:
    from babel.dates import format_time as babel_format

    return babel_format(value, width, tzinfo=zone, locale=babel_locale(locale))


def format_number(value: float, locale: str, digits: int | None = None) -> str:
    pattern = None if digits is None else "#,##0" + ("." + "0" * digits if digits else "")
    from babel.numbers import format_decimal

    return format_decimal(value, format=pattern, locale=babel_locale(locale))


def format_money(value: float, currency: str, locale: str) -> str:
    from babel.numbers import format_currency

    return format_currency(value, currency, locale=babel_locale(locale))


def minutes_text(minutes: float) -> Message:
    """A duration as messages say it: '40 min', '1 h 05 min' (whole minutes, rounded down)."""
    whole = int(minutes + 1e-9)
    if whole < 60:
        return Message("{minutes} min", minutes=whole)
    return Message("{hours} h {minutes:02d} min", hours=whole // 60, minutes=whole % 60)


def N_(text: str) -> str:  # noqa: N802 - gettext's name for "mark for translation, translate later"
    """Marks a msgid kept in data (a label table) so the catalogue check finds it; returns it unchanged."""
    return text


def is_english(locale: str) -> bool:
    return locale.split("-")[0] in ("en", "")


def localise(message: str, message_id: str | None, params: Mapping[str, Any] | None, locale: str,
             names: Names | None = None) -> str:
    """An alert's message for people reading `locale`, rendered from its id and parameters
    with names (in English with the id beside the name; the stored `message` keeps the ids
    as the rule wrote them); a message stored without an id (older alerts) stays as written."""
    if not message_id:
        return message
    if is_english(locale):  # names beside the ids: "科学实验室 (A-204)", so integrators still find the id
        return render(message_id, params or {}, locale, _with_ids(names)) if names is not None else message
    return render(message_id, params or {}, locale, names)


def _with_ids(names: Names) -> Names:
    def lookup(kind: str, value: str) -> str:
        name = names(kind, value)
        return value if name == value else f"{name} ({value})"

    return lookup


def say(text: str, locale: str, names: Names | None = None) -> str:
    """A `Message` (or plain text) in `locale`."""
    if isinstance(text, Message):
        return render(text.id, text.params, locale, names)
    return gettext_for(locale)(text) if text else text


#: strftime formats the screens use -> CLDR skeletons, so other locales get their own order and words.
_SKELETONS = {"%a %d %b %Y": "yMMMEd", "%a %d %b %H:%M": "MMMEd", "%a %d %b": "MMMEd", "%d %b %H:%M": "MMMd"}


def local_text(value: datetime, fmt: str, locale: str) -> str:
    """`value` (already in local time) as `fmt` says in English, or the locale's own form of it."""
    if is_english(locale) or fmt not in _SKELETONS:
        return value.strftime(fmt)
    from babel.dates import format_skeleton

    text = format_skeleton(_SKELETONS[fmt], value, fuzzy=True, locale=babel_locale(locale))
    return f"{text} {value:%H:%M}" if "%H" in fmt else text  # a 24-hour clock reads the same everywhere
