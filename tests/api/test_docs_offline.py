"""The API's manual at /docs and /redoc opens without a network: every script, style sheet and
image the pages load is served by the API itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from liftloop.api import create_app
from liftloop.settings import Settings, get_settings
from tests.api.helpers import API_KEY

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("LIFTLOOP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield Settings(data_dir=tmp_path / "data", api_keys=[SecretStr(API_KEY)])
    get_settings.cache_clear()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_manual_loads_only_what_the_api_serves(settings: Settings, page: str) -> None:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        html = await http.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assets = {a or b for a, b in _ASSET.findall(html.text)}
        assert assets, html.text
        assert not [a for a in assets if "//" in a], "loaded from another host"
        scripts = [a for a in assets if a.endswith(".js")]
        assert scripts and "/openapi.json" in html.text
        for asset in assets:
            served = await http.get(asset)
            assert served.status_code == 200, asset
            if asset.endswith(".js"):
                assert len(served.content) > 100_000, asset  # the whole bundle, not a stub
        spec = await http.get("/openapi.json")
        assert (
            spec.status_code == 200 and "/v1/campaigns/{campaign_id}/costs" in spec.json()["paths"]
        )
