"""Free text people type into the API (notes, repair requests, comments).

PostgreSQL's text cannot hold the NUL character, SQLite's can: a note with one would be
kept on one engine and answered with a server error on the other. It is refused where
it comes in, with a 422 naming the field, so both engines keep the same texts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _without_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


#: A str field people type into; use as `note: TypedText = Field(max_length=...)`.
TypedText = Annotated[str, AfterValidator(_without_nul)]
