"""The web app's one router, made of the pages' own."""

from __future__ import annotations

from fastapi import APIRouter

from liftloop.web import assets, audit_page, campaign_pages, inbox, login

router = APIRouter(include_in_schema=False)
for part in (assets, login, campaign_pages, audit_page, inbox):
    router.include_router(part.router)
