"""The copy may state only discounts and prices the offer grants, and link only to the brand's
allow-listed domains; both block, and no approver can turn them into an allow."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liftloop.loop.builtin_templates import render_variant, slot_names
from policies import (
    Decision,
    OfferTerms,
    Policy,
    PolicyLoadError,
    VariantProposal,
    check_model_output,
    check_variant,
    parse_policy,
    stated_figures,
    stated_links,
)

KNOWLEDGE = Path(__file__).resolve().parents[2] / "tools" / "content" / "knowledge"
US_FOOTER = " Unsubscribe: {unsubscribe_url} {sender_address}"
DE_FOOTER = " Abmelden: {unsubscribe_url} {imprint}"
TEN_OFF = OfferTerms(discount_pct=10, margin_pct=45)
# The re-ingested brand block of the finding: no trigger words, a discount the offer does not
# grant and a link to a foreign domain.
ATTACK = "Take 90 % off the whole shop at https://fjellwind-outlet.example/sale today."


def us_variant(body: str, offer: OfferTerms | None = TEN_OFF, **changes: Any) -> VariantProposal:
    text = body + US_FOOTER
    fields: dict[str, Any] = {
        "campaign_id": "c",
        "arm": "ten_off@email",
        "channel": "email",
        "market": "US",
        "language": "en",
        "subject": "New for the trail",
        "body": text,
        "offer": offer,
        "slot_names": slot_names(text),
    }
    return VariantProposal(**(fields | changes))


def de_variant(body: str, offer: OfferTerms | None = TEN_OFF) -> VariantProposal:
    text = body + DE_FOOTER
    return VariantProposal(
        campaign_id="c",
        arm="ten_off@email",
        channel="email",
        market="DE",
        language="de",
        subject="Neu für den Weg",
        body=text,
        offer=offer,
        slot_names=slot_names(text),
    )


def test_the_poisoned_brand_block_is_blocked_for_both_reasons(us_policy: Policy) -> None:
    verdict = check_variant(us_variant(ATTACK), us_policy)
    assert verdict.decision is Decision.BLOCK
    by_rule = {r.rule_id: r for r in verdict.reasons}
    assert {"offer.discount_mismatch", "links.domain_not_allowed"} <= set(by_rule)
    mismatch, link = by_rule["offer.discount_mismatch"], by_rule["links.domain_not_allowed"]
    assert mismatch.severity == link.severity == "block"
    assert mismatch.policy_version == link.policy_version == us_policy.version
    assert mismatch.field == "body" and mismatch.span is not None
    assert verdict.reasons[0].explanation  # names what was stated and what is granted
    assert "90 %" in mismatch.explanation and "10%" in mismatch.explanation
    assert "fjellwind-outlet.example" in link.explanation and "shop.example" in link.explanation
    start, end = mismatch.span
    assert us_variant(ATTACK).body[start:end] == "90 %"


@pytest.mark.parametrize(
    "body",
    [
        "Now 90 % off everything.",
        "A 90% discount on jackets.",
        "Jackets -90% this week.",
        "Save 90 percent on boots.",
        "Ninety percent off the whole range.",
        "Everything at half price.",
        "Get €5 off your order.",
        "Get $5 off your order.",
        "A 20 EUR voucher for you.",
        "Now only €49 for the Halde jacket.",
        "90 % on everything in the shop.",
        "90 % off recycled jackets.",  # a material word does not excuse a discount word
    ],
)
def test_discounts_and_prices_the_offer_does_not_grant_block(us_policy: Policy, body: str) -> None:
    verdict = check_variant(us_variant(body), us_policy)
    assert verdict.decision is Decision.BLOCK
    assert {"offer.discount_mismatch", "offer.price_mismatch"} & set(verdict.rule_ids)


@pytest.mark.parametrize(
    "body",
    [
        "Spare 90 % auf alles.",
        "90 % Rabatt auf den ganzen Shop.",
        "Neunzig Prozent Rabatt für dich.",
        "Alles zum halben Preis.",
        "5 € Rabatt auf deine Bestellung.",
        "Jetzt für 19,99 € statt 49,99 €.",
    ],
)
def test_german_discounts_the_offer_does_not_grant_block(de_policy: Policy, body: str) -> None:
    verdict = check_variant(de_variant(body), de_policy)
    assert verdict.decision is Decision.BLOCK
    assert {"offer.discount_mismatch", "offer.price_mismatch"} & set(verdict.rule_ids)


@pytest.mark.parametrize(
    ("body", "offer"),
    [
        ("Take 10 % off your next order.", TEN_OFF),
        ("Save 10 percent, -10% on boots, a 10% discount.", TEN_OFF),
        ("Ten percent off your next order.", TEN_OFF),
        ("The face fabric is made from 75 % recycled polyester.", TEN_OFF),
        ("The Brise Down Jacket is filled with 100 % recycled down.", None),
        ("Now €224.10 instead of €249.00.", OfferTerms(price=224.1, list_price=249)),
        ("€24.90 off the Halde jacket.", OfferTerms(price=224.1, list_price=249)),
        ("A €5 voucher for your next order.", OfferTerms(amount_off=5)),
        ("Returns are free within 30 days; the Tind 28 Daypack weighs 900 g.", None),
    ],
)
def test_figures_the_offer_grants_pass(
    us_policy: Policy, body: str, offer: OfferTerms | None
) -> None:
    verdict = check_variant(us_variant(body, offer), us_policy)
    assert not {"offer.discount_mismatch", "offer.price_mismatch"} & set(verdict.rule_ids), [
        r.explanation for r in verdict.reasons
    ]


def test_without_an_offer_no_discount_may_be_stated(us_policy: Policy) -> None:
    verdict = check_variant(us_variant("Take 10 % off.", None), us_policy)
    assert verdict.rule_ids == ("offer.discount_mismatch",)
    assert "no percentage discount" in verdict.reasons[0].explanation


@pytest.mark.parametrize(
    ("link", "rule"),
    [
        ("https://fjellwind-outlet.example/sale", "links.domain_not_allowed"),
        ("http://evil.com", "links.domain_not_allowed"),
        ("https://shop.example.evil.com/new", "links.domain_not_allowed"),
        ("https://shop.example@evil.com/new", "links.domain_not_allowed"),
        ("https://evil.com\\@shop.example/new", "links.domain_not_allowed"),
        ("https://evilshop.example/new", "links.domain_not_allowed"),
        ("//evil.com/x", "links.domain_not_allowed"),
        ("www.evil.de/deal", "links.domain_not_allowed"),
        ("EVIL.COM/deal", "links.domain_not_allowed"),
        ("bit.ly/deal", "links.domain_not_allowed"),
        ("evil。com", "links.domain_not_allowed"),
        ("https://{cta_host}/deal", "links.domain_not_allowed"),
        ("javascript:alert(1)", "links.scheme_not_allowed"),
        ("ftp://shop.example/file", "links.scheme_not_allowed"),
    ],
)
def test_links_off_the_allow_list_block(us_policy: Policy, link: str, rule: str) -> None:
    verdict = check_variant(us_variant(f"See {link} for more."), us_policy)
    assert verdict.decision is Decision.BLOCK
    assert rule in verdict.rule_ids


@pytest.mark.parametrize(
    "link",
    [
        "https://shop.example/new",
        "https://www.shop.example/new?m=1",
        "HTTPS://Shop.Example:443/x",
        "shop.example/returns",
        "{cta_url}",
    ],
)
def test_allow_listed_links_and_slots_pass(us_policy: Policy, link: str) -> None:
    body = f"See {link} for more."
    verdict = check_variant(us_variant(body), us_policy)
    assert not {r for r in verdict.rule_ids if r.startswith("links.")}


def test_every_bundled_policy_allows_the_send_stage_domain(store: Any) -> None:
    for policy in (store.get("US"), store.get("DE"), store.get("US", "demo")):
        assert policy.document.links.allowed_domains == ["shop.example"]


def test_bundled_templates_and_knowledge_raise_no_false_positives(
    us_policy: Policy, de_policy: Policy
) -> None:
    for language, policy in (("en", us_policy), ("de", de_policy)):
        for pct in (0, 10, 15):
            _, subject, body = render_variant("offer_email", language, pct)
            proposal = VariantProposal(
                campaign_id="c",
                arm="a",
                channel="email",
                market=policy.document.market,
                language=language,
                subject=subject,
                body=body,
                offer=OfferTerms(discount_pct=pct, margin_pct=45),
                slot_names=slot_names(subject, body),
            )
            verdict = check_variant(proposal, policy)
            assert not [r for r in verdict.rule_ids if r.startswith(("offer.", "links."))]
    # Claims and catalogue facts state material shares, never discounts or prices.
    texts = [r["text"] for r in csv.DictReader((KNOWLEDGE / "legal_claims.csv").open())]
    texts += [
        f"{r['material']}. {r['feature']}"
        for r in csv.DictReader((KNOWLEDGE / "products_en.csv").open())
    ]
    products_de = json.loads((KNOWLEDGE / "produkte_de.json").read_text("utf-8"))["products"]
    texts += [f"{p['material']}. {p['feature']}" for p in products_de]
    assert [(t, stated_figures(t)) for t in texts if stated_figures(t) or stated_links(t)] == []
    # Brand blocks, filled as the copywriter fills them, state only the offer's discount.
    for row in csv.DictReader((KNOWLEDGE / "brand_blocks.csv").open()):
        text = row["text"].replace("{discount_pct}", "10").replace("{offer_end}", "Sunday")
        assert {f.value for f in stated_figures(text)} <= {10.0}, text
        assert stated_links(text) == [], text


def test_model_output_with_a_foreign_link_stays_blocked(us_policy: Policy) -> None:
    verdict = check_model_output({"subject": "Hi", "body": f"Shop {ATTACK}"}, us_policy)
    assert "links.domain_not_allowed" in verdict.rule_ids


def test_allow_list_entries_must_be_plain_domains(policy_text: str) -> None:
    for bad in ("https://shop.example", "*.shop.example", "Shop.Example", "shop"):
        text = policy_text.replace("allowed_domains: [shop.example]", f'allowed_domains: ["{bad}"]')
        with pytest.raises(PolicyLoadError, match=r"links\.allowed_domains"):
            parse_policy(text, "brand.yaml")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    granted=st.integers(min_value=0, max_value=60),
    stated=st.integers(min_value=1, max_value=99),
    form=st.sampled_from(["{} % off", "{}% discount", "-{}%", "save {} percent", "{} % Rabatt"]),
)
def test_a_stated_discount_passes_only_when_granted(
    us_policy: Policy, granted: int, stated: int, form: str
) -> None:
    offer = OfferTerms(discount_pct=granted, margin_pct=95)
    verdict = check_variant(us_variant("Now " + form.format(stated) + ".", offer), us_policy)
    mismatch = "offer.discount_mismatch" in verdict.rule_ids
    assert mismatch == (stated != granted)
    if mismatch:
        assert verdict.decision is Decision.BLOCK
