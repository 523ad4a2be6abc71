"""Template tags: a tag names one build of a template, so `name:tag` starts sandboxes from the image that build
made, whatever was built after it (E2B's tags; a build without tags gets `default`). Assigning a tag that
exists moves it. The images themselves stay in the template store until the template is deleted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import BuildRow, TemplateTagRow
from sandboxd.errors import Invalid, NotFound

DEFAULT_TAG = "default"
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$", re.IGNORECASE)


@dataclass(frozen=True)
class Tag:
    tag: str
    build_id: str
    created_at: datetime


def check_tags(name: str, tags: list[str]) -> list[str]:
    """Plain tags, or `name:tag` of this very template; anything else is a 400 naming it."""
    out = []
    for raw in tags:
        base, sep, tag = raw.rpartition(":")
        if sep and base != name:
            raise Invalid(f"tag {raw!r} does not belong to template {name}", code="invalid_tag")
        if not TAG_RE.match(tag):
            raise Invalid(f"invalid tag {raw!r}: use letters, digits, '.', '_' and '-' (max 128)", code="invalid_tag")
        out.append(tag)
    if not out:
        raise Invalid("no tags given", code="invalid_tag")
    return list(dict.fromkeys(out))


class TagService:
    def __init__(self, store: Store):
        self.store = store

    def assign(self, template_id: str, build_id: str, tags: list[str]) -> None:
        now = datetime.now(timezone.utc)
        with self.store.tx() as s:
            for tag in tags:
                row = s.get(TemplateTagRow, (template_id, tag))
                if row is None:
                    s.add(TemplateTagRow(template_id=template_id, tag=tag, build_id=build_id, created_at=now))
                else:
                    row.build_id, row.created_at = build_id, now

    def build_of(self, template_id: str, tag: str) -> str:
        with self.store.tx() as s:
            row = s.get(TemplateTagRow, (template_id, tag))
            if row is None or s.get(BuildRow, row.build_id) is None:
                raise NotFound(f"no tag {tag!r} on this template", code="template_tag_not_found")
            return row.build_id

    def remove(self, template_id: str, tags: list[str]) -> None:
        with self.store.tx() as s:
            rows = [s.get(TemplateTagRow, (template_id, tag)) for tag in tags]
            missing = [t for t, r in zip(tags, rows) if r is None]
            if missing:
                raise NotFound(f"no tag {missing[0]!r} on this template", code="template_tag_not_found")
            for row in rows:
                s.delete(row)

    def list(self, template_id: str) -> list[Tag]:
        with self.store.tx() as s:
            rows = s.scalars(select(TemplateTagRow).where(TemplateTagRow.template_id == template_id)
                             .order_by(TemplateTagRow.created_at, TemplateTagRow.tag))
            return [Tag(r.tag, r.build_id, r.created_at) for r in rows]

    def forget(self, template_id: str) -> None:
        with self.store.tx() as s:
            for row in s.scalars(select(TemplateTagRow).where(TemplateTagRow.template_id == template_id)):
                s.delete(row)
