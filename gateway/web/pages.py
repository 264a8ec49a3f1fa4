"""What the dashboard's pages share to speak the reader's language (docs/localisation.md):
the locale a page is in, `_` for its template, and the strings table its script reads
from `<script type="application/json" id="strings">` (its `t(...)`), so no script needs
a catalogue. gateway/api.py (the dashboard) and gateway/workorders_api.py (work orders)
both use these; neither imports the other's page."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import HTTPException, Request

from warden.config import SiteConfig
from warden.i18n import gettext_for, pick_locale


def page_locale(request: Request, site_locale: str) -> str:
    """The site's locale; a kiosk (public reads, no token yet) may pick another shipped
    one by Accept-Language, since the page is read before anyone signs in."""
    if request.app.state.auth.public_read:
        return pick_locale(request.headers.get("accept-language"), site_locale)
    return site_locale


def page_gettext(locale: str) -> Callable[..., str]:
    """`_` for a page template: translate, then fill `%(name)s` fields (as jinja2's i18n does)."""
    gettext = gettext_for(locale)

    def translate(text: str, **values: Any) -> str:
        return gettext(text) % values if values else gettext(text)

    return translate


def page_strings(texts: Iterable[str], locale: str) -> dict[str, str]:
    """msgid -> its translation in `locale`, for a page's strings table (read, not fetched)."""
    gettext = gettext_for(locale)
    return {text: gettext(text).replace("</", "<\\/") for text in texts}  # safe inside <script>


def page_site(sites: Mapping[str, SiteConfig], site: str | None) -> SiteConfig:
    """The site a page shows (its `?site=`; default the gateway's first). A page holds no data,
    only the site's names and zone; the data comes with the token, scoped to its sites."""
    if site is None:
        return next(iter(sites.values()))
    if site not in sites:
        raise HTTPException(status_code=404, detail=f"site: no site {site!r} on this gateway")
    return sites[site]
