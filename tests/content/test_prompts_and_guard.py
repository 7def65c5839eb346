from __future__ import annotations

from pathlib import Path

import pytest

from tools.content.errors import ContentError
from tools.content.guard import GuardContext, builtin_guard
from tools.content.models import BodyBlock, CopyDraft
from tools.content.prompts import PromptLibrary, default_library, load_template_file


def test_library_loads_versioned_templates() -> None:
    library = default_library()
    assert library.ids() == ["promo_push", "promo_sms", "subject_line", "winback_email"]
    winback = library.get("winback_email")
    assert winback.version == "1.2.0" and winback.channel == "email"
    assert library.get("subject_line").task == "subject_line"
    with pytest.raises(ContentError, match=r"^template_id: unknown template 'nope'"):
        library.get("nope")


def test_render_fills_variables_and_keeps_slots() -> None:
    template = default_library().get("winback_email")
    text = template.render(
        "Hi {{first_name}}, {discount_pct} % until {offer_end}",
        {"discount_pct": "10", "language": "en", "knowledge_json": "[]", "parameters_json": "{}"},
    )
    assert text == "Hi {{first_name}}, 10 % until the end of the month"
    with pytest.raises(ContentError, match=r"^vars.language: required"):
        template.render("x", {"knowledge_json": "[]", "parameters_json": "{}"})
    with pytest.raises(ContentError, match="undeclared variable 'secret'"):
        template.render(
            "{secret}", {"language": "en", "knowledge_json": "[]", "parameters_json": "{}"}
        )


def test_broken_template_file_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("id: bad\nversion: '1'\nchannel: fax\n", "utf-8")
    with pytest.raises(ContentError, match=r"^bad.yaml:channel"):
        load_template_file(tmp_path / "bad.yaml")
    with pytest.raises(ContentError, match=r"^bad.yaml:channel"):
        PromptLibrary(tmp_path)


def _context() -> GuardContext:
    return GuardContext(
        template=default_library().get("winback_email"),
        language="en",
        shown_doc_ids=frozenset({"brand-blocks", "catalogue-en"}),
        approved_claim_ids=frozenset({"recycled-down"}),
        discount_pct=10,
    )


def _draft(**changes: object) -> CopyDraft:
    base = CopyDraft(
        subject="10 % off for your next walk outside",
        preheader="Returns stay free for 30 days.",
        body_blocks=[
            BodyBlock(kind="greeting", text="Hi {{first_name}},"),
            BodyBlock(kind="footer", text="Unsubscribe: {{unsubscribe_url}}"),
        ],
        call_to_action="See what is new",
        claims_used=["recycled-down"],
        citations=["brand-blocks"],
    )
    return base.model_copy(update=changes)


def test_builtin_guard_passes_clean_copy() -> None:
    assert builtin_guard(_draft(), _context()).passed


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"subject": "x" * 61}, "length.subject"),
        ({"preheader": "y" * 101}, "length.preheader"),
        ({"body_blocks": [BodyBlock(kind="paragraph", text="no footer")]}, "required_element"),
        ({"call_to_action": "Act now!"}, "banned_phrase"),
        ({"subject": "Hi {{last_order_total}}"}, "slot.unknown"),
        ({"preheader": "Write to anna@example.com"}, "personal_data"),
        ({"citations": []}, "citation.missing"),
        ({"citations": ["trading-margins"]}, "citation.unknown"),
        ({"claims_used": ["climate-neutral"]}, "claim.unapproved"),
    ],
)
def test_builtin_guard_rules(changes: dict[str, object], rule: str) -> None:
    result = builtin_guard(_draft(**changes), _context())
    assert not result.passed
    assert rule in [r.rule_id for r in result.reasons]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"subject": "90 % off the whole shop"}, "offer.discount_mismatch"),
        ({"preheader": "Save 25 percent today."}, "offer.discount_mismatch"),
        ({"call_to_action": "Get €5 off"}, "offer.discount_mismatch"),
        ({"call_to_action": "Only €49"}, "offer.price_mismatch"),
        ({"call_to_action": "Shop at fjellwind-outlet.example/sale"}, "links.domain_not_allowed"),
        ({"preheader": "https://shop.example@evil.com/x"}, "links.domain_not_allowed"),
    ],
)
def test_builtin_guard_checks_the_offer_and_links(changes: dict[str, object], rule: str) -> None:
    result = builtin_guard(_draft(**changes), _context())
    assert rule in [r.rule_id for r in result.reasons]


def test_builtin_guard_allows_links_only_to_the_given_domains() -> None:
    draft = _draft(call_to_action="More at https://www.shop.example/new")
    assert not builtin_guard(draft, _context()).passed
    allowed = _context().model_copy(update={"allowed_link_domains": ("shop.example",)})
    assert builtin_guard(draft, allowed).passed


def _sms_context() -> GuardContext:
    return GuardContext(
        template=default_library().get("promo_sms"),
        language="en",
        shown_doc_ids=frozenset({"brand-blocks"}),
        approved_claim_ids=frozenset(),
        discount_pct=10,
    )


def _sms(text: str, **changes: object) -> CopyDraft:
    draft = CopyDraft(
        subject="",
        body_blocks=[BodyBlock(kind="paragraph", text=text)],
        call_to_action="",
        citations=["brand-blocks"],
    )
    return draft.model_copy(update=changes)


def test_sms_guard_counts_the_message_as_sent() -> None:
    ok = "Fjellwind: 10 % off until Sunday. {{cta_url}} Reply STOP to opt out."
    assert builtin_guard(_sms(ok), _sms_context()).passed
    # The text alone fits in 160 characters; with the link slot counted at 64 it does not.
    long = "Fjellwind: 10 % off your next order until Sunday, for every jacket in the range. "
    result = builtin_guard(_sms(long + "{{cta_url}} Reply STOP to opt out."), _sms_context())
    assert [r.rule_id for r in result.reasons] == ["length.sms"]
    # One character outside the GSM alphabet (an en dash) makes it UCS-2: 70 units at most.
    dashed = builtin_guard(_sms(ok.replace(":", " –")), _sms_context())
    assert [r.rule_id for r in dashed.reasons] == ["length.sms"]
    assert "ucs-2" in dashed.reasons[0].message and "–" in dashed.reasons[0].message
    no_subject = builtin_guard(_sms(ok, subject="Hello"), _sms_context())
    assert "length.subject" in [r.rule_id for r in no_subject.reasons]
    button = builtin_guard(_sms(ok, call_to_action="Shop"), _sms_context())
    assert "sms.call_to_action" in [r.rule_id for r in button.reasons]
    missing_link = builtin_guard(_sms("Fjellwind: 10 % off. Reply STOP."), _sms_context())
    assert "required_element" in [r.rule_id for r in missing_link.reasons]
