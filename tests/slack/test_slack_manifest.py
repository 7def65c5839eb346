"""The Slack app manifest in deploy/ asks for what the code uses and points at its route."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from liftloop.api_slack import router

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "slack-app-manifest.yml"


def test_the_manifest_matches_the_app() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["oauth_config"]["scopes"]["bot"] == ["chat:write"]
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    url = urlsplit(interactivity["request_url"])
    assert url.scheme == "https" and url.netloc == "liftloop.example.com"
    assert url.path in {getattr(r, "path", None) for r in router.routes}
