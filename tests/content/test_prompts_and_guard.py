from __future__ import annotations

from pathlib import Path

import pytest

from tools.content.errors import ContentError
from tools.content.guard import GuardContext, builtin_guard
from tools.content.models import BodyBlock, CopyDraft
from tools.content.prompts import PromptLibrary, default_library, load_template_file


def test_library_loads_versioned_templates() -> None:
    library = default_library()
    assert library.ids() == ["promo_push", "subject_line", "winback_email"]
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
