"""The one stylesheet, served from the package (no CDN, no build step)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from liftloop.web.pages import CSS, PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/assets/web.css")
async def stylesheet() -> Response:
    # Its address carries a hash of its content (`CSS_URL`), so it may be kept for a day.
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})
