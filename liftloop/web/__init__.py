"""The web app for people: campaign managers start and steer campaigns, approvers decide the
inbox, auditors and admins read. Server-rendered pages (Jinja2, autoescaped) and plain HTML
forms, one stylesheet of our own, no script.

`create_app` mounts `router` and overrides `get_web_context` with the app's engine, audit log,
Temporal client and keys; alone, the router answers every page with a 500 page.
"""

from liftloop.web.context import WebContext, get_web_context
from liftloop.web.router import router

__all__ = ["WebContext", "get_web_context", "router"]
