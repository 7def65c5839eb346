"""The web app over ASGI: signing in and out and the cookies' flags, CSRF on every form, roles
on every POST, escaping of hostile text, and 4xx pages (never a 500) for hostile input."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from liftloop.api import create_app
from liftloop.settings import Settings
from tests.web.helpers import (
    PASSWORD,
    csrf_of,
    pending_request,
    person,
    sign_in,
    web_client,
)


def _html(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/html"), response.headers
    return response.text


def _session_cookie(response: httpx.Response) -> str:
    [cookie] = [c for c in response.headers.get_list("set-cookie") if "liftloop_session=" in c]
    return cookie


@pytest.mark.parametrize("secure", [False, True])
async def test_sign_in_sets_a_hardened_session_cookie_and_sign_out_ends_it(
    settings: Settings, engine: Engine, secure: bool
) -> None:
    settings = settings.model_copy(update={"web_secure_cookies": secure})
    person(engine, "maya", "manager")
    async with web_client(create_app(settings), https=secure) as http:
        form = await http.get("/login")
        login_cookie = next(
            c for c in form.headers.get_list("set-cookie") if "liftloop_login_csrf=" in c
        )
        assert "HttpOnly" in login_cookie and "SameSite=strict" in login_cookie
        answer = await http.post(
            "/login",
            data={"name": "maya", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/campaigns"
        cookie = _session_cookie(answer)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Max-Age=43200" in cookie
        assert ("Secure" in cookie) is secure
        secret = re.search(r"liftloop_session=([^;]+)", cookie)
        assert secret

        inbox = await http.get("/approvals")
        assert inbox.status_code == 200 and "maya" in _html(inbox)
        assert "default-src 'none'" in inbox.headers["content-security-policy"]
        assert inbox.headers["cache-control"] == "no-store"
        out = await http.post("/logout", data={"csrf_token": csrf_of(inbox.text)})
        assert out.status_code == 303 and out.headers["location"] == "/login"

    # The old cookie, presented again, finds no session: it ended on the server.
    async with web_client(create_app(settings), https=secure) as http:
        http.cookies.set("liftloop_session", secret.group(1))
        again = await http.get("/approvals")
        assert again.status_code == 303
        assert again.headers["location"] == "/login?next=/approvals"


async def test_a_wrong_password_and_an_unknown_name_get_the_same_401(
    settings: Settings, engine: Engine
) -> None:
    person(engine, "maya", "manager")
    async with web_client(create_app(settings)) as http:
        pages = []
        for name, password in (("maya", "not the password!"), ("nobody", "not the password!")):
            form = await http.get("/login")
            answer = await http.post(
                "/login",
                data={"name": name, "password": password, "csrf_token": csrf_of(form.text)},
            )
            assert answer.status_code == 401
            assert "liftloop_session=" not in answer.headers.get("set-cookie", "")
            pages.append(_html(answer).replace(name, "NAME"))
        assert "Wrong name or password." in pages[0]
        # The same page but for the token: nothing tells a known name from an unknown one.
        assert csrf_of(pages[0]) != csrf_of(pages[1])
        assert pages[0].replace(csrf_of(pages[0]), "") == pages[1].replace(csrf_of(pages[1]), "")


async def test_the_sign_in_form_needs_its_own_token(settings: Settings, engine: Engine) -> None:
    person(engine, "maya", "manager")
    async with web_client(create_app(settings)) as http:
        forged = await http.post(
            "/login", data={"name": "maya", "password": PASSWORD, "csrf_token": "guessed"}
        )
        assert forged.status_code == 403 and "expired" in _html(forged)
        assert "liftloop_session=" not in forged.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/approvals",
        "/\\evil.example",
        "javascript:alert(1)",
        "/login",
        "/approvals\r\nSet-Cookie: x=1",
    ],
)
async def test_sign_in_returns_only_to_a_page_of_this_site(
    settings: Settings, engine: Engine, target: str
) -> None:
    person(engine, "maya", "manager")
    async with web_client(create_app(settings)) as http:
        form = await http.get("/login", params={"next": target})
        assert 'name="next" value="/campaigns"' in form.text
        answer = await http.post(
            "/login",
            data={
                "name": "maya",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": target,
            },
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/campaigns"


async def test_a_page_asked_for_signed_out_comes_back_after_sign_in(
    settings: Settings, engine: Engine
) -> None:
    person(engine, "maya", "manager")
    async with web_client(create_app(settings)) as http:
        away = await http.get("/approvals", params={"decided": "x"})
        assert away.status_code == 303
        assert away.headers["location"] == "/login?next=/approvals%3Fdecided%3Dx"
        form = await http.get(away.headers["location"])
        assert 'name="next" value="/approvals?decided=x"' in form.text
        answer = await http.post(
            "/login",
            data={
                "name": "maya",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": "/approvals?decided=x",
            },
        )
        assert answer.headers["location"] == "/approvals?decided=x"
        # A form posted without a session is refused, not redirected with its data.
        http.cookies.clear()
        post = await http.post("/logout", data={})
        assert post.status_code == 403 and "sign in again" in _html(post)


async def test_every_form_needs_the_sessions_csrf_token(settings: Settings, engine: Engine) -> None:
    person(engine, "lead", "approver")
    rid = pending_request(engine, settings, "csrf-c")
    async with web_client(create_app(settings)) as http:
        token = await sign_in(http, "lead")
        posts = [
            ("/logout", {}),
            ("/logout", {"csrf_token": "x" + token[1:]}),
            (f"/approvals/{rid}/decide", {"verdict": "approve"}),
            (f"/approvals/{rid}/decide", {"verdict": "approve", "csrf_token": token[:-1]}),
            ("/campaigns/new", {"spec": "{}", "csrf_token": ""}),
            ("/campaigns/csrf-c/control", {"action": "stop"}),
        ]
        for path, data in posts:
            refused = await http.post(path, data=data)
            assert refused.status_code == 403, (path, refused.text)
            assert "security token is missing or wrong" in _html(refused)
        # A JSON body carries no form field, so no token either.
        json_body = await http.post(f"/approvals/{rid}/decide", json={"csrf_token": token})
        assert json_body.status_code == 403
        # Nothing was decided, and the session still works.
        inbox = await http.get("/approvals")
        assert rid in inbox.text and "Approve" in inbox.text


async def test_roles_are_checked_on_every_post(settings: Settings, engine: Engine) -> None:
    for name, role in (("maya", "manager"), ("lead", "approver"), ("ana", "auditor")):
        person(engine, name, role)
    rid = pending_request(engine, settings, "roles-c")
    app = create_app(settings)
    async with web_client(app) as ana:
        token = await sign_in(ana, "ana")
        inbox = await ana.get("/approvals")
        assert "You read this inbox; approvers decide." in inbox.text
        assert 'action="/approvals/' not in inbox.text
        assert (await ana.get("/campaigns/new")).status_code == 403
        start = await ana.post("/campaigns/new", data={"csrf_token": token, "spec": "{}"})
        assert start.status_code == 403
        assert "starting a campaign needs the role manager; ana is a auditor" in start.text
        decide = await ana.post(
            f"/approvals/{rid}/decide",
            data={"csrf_token": token, "verdict": "approve", "note": "fine"},
        )
        assert decide.status_code == 403 and "approver.role" in decide.text
    async with web_client(app) as lead:
        token = await sign_in(lead, "lead")
        steer = await lead.post(
            "/campaigns/roles-c/control", data={"csrf_token": token, "action": "stop"}
        )
        assert steer.status_code == 403
        assert "steering a campaign needs the role manager" in steer.text
        reject = await lead.post(
            f"/approvals/{rid}/decide", data={"csrf_token": token, "verdict": "reject"}
        )
        assert reject.status_code == 403
        assert "rejection.reason" in reject.text and "a rejection needs a note" in reject.text
    async with web_client(app) as maya:
        token = await sign_in(maya, "maya")
        inbox = await maya.get("/approvals")
        assert rid in inbox.text and 'action="/approvals/' not in inbox.text
        decide = await maya.post(
            f"/approvals/{rid}/decide",
            data={"csrf_token": token, "verdict": "approve", "identical": "on"},
        )
        assert decide.status_code == 403
        assert "approver.role" in decide.text and "only approvers decide" in decide.text


async def test_an_approver_who_started_the_campaign_sees_why_not_and_is_refused(
    settings: Settings, engine: Engine
) -> None:
    person(engine, "otto", "approver")
    rid = pending_request(engine, settings, "own-c", started_by="otto")
    async with web_client(create_app(settings)) as http:
        token = await sign_in(http, "otto")
        inbox = await http.get("/approvals")
        assert "You cannot decide this one" in inbox.text and "approver.four_eyes" in inbox.text
        decide = await http.post(
            f"/approvals/{rid}/decide", data={"csrf_token": token, "verdict": "approve"}
        )
        assert decide.status_code == 403 and "approver.four_eyes" in decide.text


async def test_hostile_text_is_escaped_everywhere(settings: Settings, engine: Engine) -> None:
    person(engine, "lead", "approver")
    person(engine, "maya", "manager")
    script = '<script>alert("x")</script>'
    pending_request(
        engine,
        settings,
        "hostile-c",
        subject=f"{script} {{first_name}}",
        body=f'<img src=x onerror="alert(1)"> {{{{cta_url}}}} {script}',
        explanation=f"because {script}",
    )
    app = create_app(settings)
    async with web_client(app) as http:
        await sign_in(http, "lead")
        page = _html(await http.get("/approvals"))
        assert "<script>" not in page and "<img" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
        # Slots are marked, the rest of the text stays escaped around them.
        assert '<span class="slot" title="filled per person at send time">{first_name}</span>' in (
            page
        )
        assert ">{{cta_url}}</span>" in page
    async with web_client(app) as http:
        token = await sign_in(http, "maya")
        spec = '{"id": "<script>alert(1)</script>", "channels": ["email"], "offers": [{"id": "a"}]}'
        answer = await http.post("/campaigns/new", data={"csrf_token": token, "spec": spec})
        assert answer.status_code == 422
        page = _html(answer)
        assert "<script>" not in page
        # The text is kept in the textarea, escaped, with each bad field named.
        assert "&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;" in page
        assert "<li><code>id</code> String should match pattern" in page


async def test_spec_errors_are_shown_per_field_with_the_text_kept(
    settings: Settings, engine: Engine
) -> None:
    person(engine, "maya", "manager")
    async with web_client(create_app(settings)) as http:
        token = await sign_in(http, "maya")
        cases = [
            ("id: spring\nchannels: [fax]\noffers: []\n", ["channels.0", "offers"]),
            ('{"id": "x", "channels": ["email"]', ["spec"]),
            ("- just\n- a list\n", ["spec"]),
            ("", ["spec"]),
            ("a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\n", ["spec"]),
            ("[" * 5000 + "]" * 5000, ["spec"]),
            (
                '{"id": "x", "channels": ["email"], '
                '"offers": [{"id": "a", "discount_pct": 1e999}]}',
                ["offers.0.discount_pct"],
            ),
        ]
        for text, fields in cases:
            answer = await http.post("/campaigns/new", data={"csrf_token": token, "spec": text})
            assert answer.status_code == 422, (text[:40], answer.text)
            page = _html(answer)
            for field in fields:
                assert f"<li><code>{field}</code>" in page, (text[:40], page)
        too_long = "x" * (settings.spec_max_bytes + 1)
        answer = await http.post("/campaigns/new", data={"csrf_token": token, "spec": too_long})
        assert answer.status_code == 422 and "at most" in answer.text


async def test_hostile_input_gets_a_4xx_page_never_a_500(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine
) -> None:
    person(engine, "lead", "approver")
    person(engine, "maya", "manager")
    rid = pending_request(engine, settings, "input-c")
    app = create_app(settings, client=dev_env.client)
    async with web_client(app) as http:
        token = await sign_in(http, "lead")
        for path in (
            "/campaigns/NOT-AN-ID",
            "/campaigns/" + "a" * 81,
            "/campaigns/%00",
            "/campaigns/no-such-campaign",
            "/campaigns/%3Cscript%3E/timeline",
        ):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert "<script>" not in _html(answer)
        decide = f"/approvals/{rid}/decide"
        for data, status in (
            ({"verdict": "approve", "note": "n" * 2001}, 422),
            ({"verdict": "approve", "note": "nul \x00 inside"}, 422),
            ({"note": "no verdict"}, 422),
            ({"verdict": "maybe"}, 422),
            ({"verdict": ["approve", "reject"]}, 422),
        ):
            answer = await http.post(decide, data={"csrf_token": token, **data})
            assert answer.status_code == status, (data, answer.text)
            assert "Invalid field" in answer.text or "Missing field" in answer.text
        for path, want in (
            ("/approvals/no-such-request/decide", 404),
            ("/approvals/%3Cscript%3E/decide", 404),
        ):
            answer = await http.post(
                path, data={"csrf_token": token, "verdict": "reject", "note": "no"}
            )
            assert answer.status_code == want, (path, answer.text)
        upload = await http.post(
            decide, data={"csrf_token": token}, files={"note": ("a.txt", b"a file")}
        )
        assert upload.status_code in (400, 403), upload.text
        shown = await http.get("/approvals", params={"decided": "<script>"})
        assert shown.status_code == 200 and "<script>" not in shown.text
    async with web_client(app) as http:
        token = await sign_in(http, "maya")
        control = "/campaigns/no-such-campaign/control"
        for data, status in (({"action": "explode"}, 422), ({"action": "stop"}, 404), ({}, 422)):
            answer = await http.post(control, data={"csrf_token": token, **data})
            assert answer.status_code == status, (data, answer.text)


async def test_the_stylesheet_is_served_from_the_package(
    settings: Settings, engine: Engine
) -> None:
    async with web_client(create_app(settings)) as http:
        login = await http.get("/login")
        href = re.search(r'<link rel="stylesheet" href="([^"]+)">', login.text)
        assert href and href.group(1).startswith("/assets/web.css?v=")
        css = await http.get(href.group(1))
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert "@media" in css.text
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in login.text
