"""What copy states about money and where it links: discounts, prices and link hosts.

Pure text analysis, no policy: the engine compares what is found here with the offer and the
brand's allow-list. The reading is deliberately suspicious. A percentage counts as a stated
discount unless the words around it make it a material share ("75 % recycled polyester",
"zu 100 % aus Merinowolle") and no discount word is near it; an amount of money counts as a
price unless a discount word makes it an amount off ("€5 off", "5 € Rabatt"). Numbers may be
digits or English and German number words ("ninety percent", "neunzig Prozent").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from policies.models import OfferTerms

FigureKind = Literal["percent_off", "amount_off", "price"]

# --- numbers -----------------------------------------------------------------------------------

_UNITS_EN = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
_TENS_EN = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_UNITS_DE = {
    "null": 0, "ein": 1, "eins": 1, "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6,
    "sieben": 7, "acht": 8, "neun": 9, "zehn": 10, "elf": 11, "zwölf": 12, "dreizehn": 13,
    "vierzehn": 14, "fünfzehn": 15, "sechzehn": 16, "siebzehn": 17, "achtzehn": 18,
    "neunzehn": 19,
}  # fmt: skip
_TENS_DE = {
    "zwanzig": 20, "dreißig": 30, "dreissig": 30, "vierzig": 40, "fünfzig": 50,
    "sechzig": 60, "siebzig": 70, "achtzig": 80, "neunzig": 90,
}  # fmt: skip


def _alternation(words: Iterable[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_EN_WORD = (
    f"(?:(?:{_alternation(_TENS_EN)})(?:[- ](?:{_alternation(_UNITS_EN)}))?"
    f"|(?:{_alternation(_UNITS_EN)})|(?:one )?hundred)"
)
_DE_WORD = (
    f"(?:(?:(?:{_alternation(_UNITS_DE)})und)?(?:{_alternation(_TENS_DE)})"
    f"|(?:{_alternation(_UNITS_DE)})|(?:ein)?hundert)"
)
_DIGITS = r"\d{1,3}(?:[.,\u00a0\u202f ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_NUMBER = f"(?:{_DIGITS}|{_EN_WORD}|{_DE_WORD})"
_SPACE = r"[\s\u00a0\u202f\u2009]*"


def _word_value(word: str) -> float | None:
    word = word.lower().replace(" ", "-")
    if word in ("hundred", "one-hundred", "hundert", "einhundert"):
        return 100.0
    if word in _UNITS_EN or word in _UNITS_DE:
        return float(_UNITS_EN.get(word, _UNITS_DE.get(word, 0)))
    if word in _TENS_EN or word in _TENS_DE:
        return float(_TENS_EN.get(word, _TENS_DE.get(word, 0)))
    if "-" in word:
        tens, _, unit = word.partition("-")
        if tens in _TENS_EN and unit in _UNITS_EN:
            return float(_TENS_EN[tens] + _UNITS_EN[unit])
    unit, sep, tens = word.partition("und")
    if sep and unit in _UNITS_DE and tens in _TENS_DE:
        return float(_UNITS_DE[unit] + _TENS_DE[tens])
    return None


def parse_number(text: str) -> float | None:
    """`10`, `12,5`, `1.299,00`, `1,299.00`, `ninety`, `fünfundzwanzig` → a number."""
    text = text.strip()
    if not text or not text[0].isdigit():
        return _word_value(text)
    digits = re.sub(r"[\u00a0\u202f ]", "", text)
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
        digits = digits.replace("." if decimal == "," else ",", "").replace(decimal, ".")
    elif "," in digits or "." in digits:
        sep = "," if "," in digits else "."
        head, _, tail = digits.rpartition(sep)
        # One separator followed by exactly three digits groups thousands ("1.299", "1,299").
        if len(tail) == 3 and digits.count(sep) >= 1 and head.replace(sep, "").isdigit():
            digits = digits.replace(sep, "")
        else:
            digits = digits.replace(sep, ".")
    try:
        return float(digits)
    except ValueError:
        return None


# --- discounts and prices ------------------------------------------------------------------------

_PERCENT = re.compile(
    rf"(?<![\w.,])(?P<minus>[-−–]{_SPACE})?(?P<num>{_NUMBER}){_SPACE}"
    r"(?:%|％|percent\b|per[\s-]?cent\b|prozent\b|pct\b|v\.?\s?h\.)",
    re.IGNORECASE,
)
_HALF = re.compile(
    r"(?<!\w)(?:half[\s-]price|half[\s-]off|(?:zum|für den|zu) halben preis|halber preis"
    r"|halbe[nr]? preis|halbpreis)(?!\w)",
    re.IGNORECASE,
)
_CURRENCY = r"(?:€|\$|£|¥|₣|US\$|EUR|USD|GBP|CHF|SFr\.?|Fr\.)"
_CURRENCY_AFTER = r"(?:€|\$|£|EUR|USD|GBP|CHF|SFr\.?|Fr\.|euros?\b|dollars?\b|pounds?\b|franken\b)"
_MONEY = re.compile(
    rf"(?<![\w.,])(?P<minus>[-−–]{_SPACE})?(?:"
    rf"(?P<cur1>{_CURRENCY}){_SPACE}(?P<num1>{_DIGITS})"
    rf"|(?P<num2>{_NUMBER}){_SPACE}(?:,-{_SPACE})?(?P<cur2>{_CURRENCY_AFTER})"
    r")",
    re.IGNORECASE,
)
# Words that make a nearby figure a discount: they win over any material word.
_DISCOUNT_CUES = re.compile(
    r"\b(?:off|discount\w*|sale|save[sd]?|saving\w*|reduc\w*|markdown\w*|cheaper|less"
    r"|coupon\w*|voucher\w*|promo\w*|deal\w*|bonus|cashback|minus|up to"
    r"|bis zu|g[üu]nstiger|billiger|gutschein\w*|aktion\w*)\b"
    r"|rabatt|nachlass|nachl[äa]ss|spar|reduz|preisvorteil|ersparnis",
    re.IGNORECASE,
)
# Materials that make a percentage right before them a share of a fabric, not a discount
# ("75 % recycled polyester", "zu 100 % aus Merinowolle"); a discount word near it still wins.
_MATERIAL_CUES = re.compile(
    r"\b(?:recycl\w*|recycel\w*|organic|bio(?:logisch)?\w*|merino\w*|wool|\w*wolle\b"
    r"|cotton|baumwoll\w*|polyester|polyamid\w*|nylon|elastan\w*|elastane|spandex|lycra"
    r"|down|daune\w*|feathers?|federn|leather|\w*leder\b|silk|seide|linen|leinen|hemp|hanf"
    r"|viscose|viskose|cashmere|kaschmir|fleece|lyocell|tencel|acryl\w*|modal|alpa[ck]a"
    r"|yak|kapok)\b",
    re.IGNORECASE,
)
_WINDOW = 32  # characters either side that are read for cues


@dataclass(frozen=True, slots=True)
class StatedFigure:
    kind: FigureKind
    value: float
    span: tuple[int, int]
    text: str


def _context(text: str, start: int, end: int) -> tuple[str, str]:
    before = text[max(0, start - _WINDOW) : start]
    after = text[end : end + _WINDOW]
    # Cues count only inside the figure's own sentence.
    before = re.split(r"[.!?;:\n]\s", before)[-1]
    after = re.split(r"[.!?;\n]", after)[0]
    return before, after


def _is_discount(text: str, start: int, end: int, minus: bool) -> bool:
    before, after = _context(text, start, end)
    return minus or bool(_DISCOUNT_CUES.search(before) or _DISCOUNT_CUES.search(after))


def _is_material_share(text: str, start: int, end: int) -> bool:
    _, after = _context(text, start, end)
    return bool(_MATERIAL_CUES.search(" ".join(after.split()[:3])))


def stated_figures(text: str) -> list[StatedFigure]:
    """Every discount and price the text states, in order of appearance."""
    found: list[StatedFigure] = []
    taken: list[tuple[int, int]] = []
    for match in _PERCENT.finditer(text):
        value = parse_number(match.group("num"))
        if value is None:
            continue
        start, end = match.span()
        minus = bool(match.group("minus"))
        if not _is_discount(text, start, end, minus) and _is_material_share(text, start, end):
            continue
        found.append(StatedFigure("percent_off", value, (start, end), match.group(0).strip()))
        taken.append((start, end))
    for match in _HALF.finditer(text):
        found.append(StatedFigure("percent_off", 50.0, match.span(), match.group(0)))
    for match in _MONEY.finditer(text):
        start, end = match.span()
        if any(s < end and start < e for s, e in taken):
            continue
        value = parse_number(match.group("num1") or match.group("num2") or "")
        if value is None:
            continue
        kind: FigureKind = (
            "amount_off" if _is_discount(text, start, end, bool(match.group("minus"))) else "price"
        )
        found.append(StatedFigure(kind, value, (start, end), match.group(0).strip()))
    return sorted(found, key=lambda f: f.span)


# Money to the cent; percentages to a twentieth of a point ("12,5 %" for 12.5).
_TOLERANCE = 0.01
_PCT_TOLERANCE = 0.05


def offer_grants(figure: StatedFigure, offer: OfferTerms) -> tuple[bool, str]:
    """Whether the offer grants the stated figure, and what the offer grants of that kind."""
    if figure.kind == "percent_off":
        grants = [offer.discount_pct] if offer.discount_pct > 0 else []
        if offer.price is not None and offer.list_price:
            grants.append(round(100 * (1 - offer.price / offer.list_price), 1))
        text = " or ".join(f"{g:g}%" for g in grants) or "no percentage discount"
        # A stated 0 % promises nothing.
        ok = figure.value == 0 or any(abs(figure.value - g) < _PCT_TOLERANCE for g in grants)
        return ok, text
    if figure.kind == "amount_off":
        grants = [offer.amount_off] if offer.amount_off else []
        if offer.price is not None and offer.list_price is not None:
            grants.append(round(offer.list_price - offer.price, 2))
        text = " or ".join(f"{g:g} off" for g in grants) or "no amount off"
        return any(abs(figure.value - g) < _TOLERANCE for g in grants), text
    prices = [p for p in (offer.price, offer.list_price) if p is not None]
    text = " or ".join(f"{p:g}" for p in prices) or "no price"
    return any(abs(figure.value - p) < _TOLERANCE for p in prices), text


# --- links -------------------------------------------------------------------------------------

# Hosts of links written out in copy: scheme URLs, protocol-relative URLs, www. names and bare
# domain names with a known top-level domain. Slot placeholders such as {cta_url} are no links.
_SCHEME_URL = re.compile(
    r"(?<![\w+.-])(?P<scheme>[a-z][a-z0-9+.-]{0,20})://(?P<rest>[^\s<>\"'`]*)", re.I
)
_PROTOCOL_RELATIVE = re.compile(r"(?<![\w:/])//(?P<rest>[a-z0-9][^\s<>\"'`]*)", re.I)
_SCRIPT_SCHEME = re.compile(
    r"(?<![\w+.-])(?P<scheme>javascript|vbscript|data(?=:[a-z]+/)|file(?=:/)|blob(?=:)):", re.I
)
_COMMON_TLDS = (
    "com|net|org|info|biz|io|co|app|dev|shop|store|online|site|xyz|top|club|link|click|page|"
    "web|website|space|tech|ai|me|tv|ly|gl|gg|sh|to|cc|ws|eu|asia|name|pro|mobi|live|life|"
    "world|today|news|email|digital|deals|sale|discount|promo|gift|fashion|clothing|outdoor|"
    "example|test|invalid|local|localhost|onion|[a-z]{2}"
)
# Browsers read the ideographic and full-width full stops as dots in host names.
_DOT = "[.\u3002\uff0e\uff61]"
_BARE_HOST = re.compile(
    rf"(?<![\w@.\-/\u3002\uff0e\uff61])(?P<host>(?:[^\W_](?:[\w-]{{0,61}}[^\W_])?{_DOT})+"
    rf"(?:{_COMMON_TLDS}|xn--[a-z0-9-]+))(?P<tail>[:/?#][^\s<>\"'`]*)?(?![\w@-])",
    re.I,
)


@dataclass(frozen=True, slots=True)
class StatedLink:
    scheme: str
    host: str
    span: tuple[int, int]
    text: str


def _host_of(authority: str) -> str:
    # The authority ends at the first path, query, fragment or backslash (browsers read "\" as
    # "/"); user info before "@" is not the host; a port is not part of it either.
    authority = re.split(r"[/?#\\]", authority, maxsplit=1)[0]
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        return authority.split("]", 1)[0] + "]"
    return _dots(authority.partition(":")[0]).rstrip(".").lower()


def _dots(host: str) -> str:
    return re.sub(_DOT, ".", host)


def stated_links(text: str) -> list[StatedLink]:
    links: list[StatedLink] = []
    taken: list[tuple[int, int]] = []

    def add(scheme: str, host: str, span: tuple[int, int]) -> None:
        if any(s < span[1] and span[0] < e for s, e in taken):
            return
        taken.append(span)
        links.append(StatedLink(scheme.lower(), host, span, text[span[0] : span[1]]))

    for match in _SCHEME_URL.finditer(text):
        add(match.group("scheme"), _host_of(match.group("rest")), match.span())
    for match in _SCRIPT_SCHEME.finditer(text):
        add(match.group("scheme"), "", match.span())
    for match in _PROTOCOL_RELATIVE.finditer(text):
        add("", _host_of(match.group("rest")), match.span())
    for match in _BARE_HOST.finditer(text):
        add("", _dots(match.group("host")).rstrip(".").lower(), match.span())
    return sorted(links, key=lambda link: link.span)


def host_allowed(host: str, domains: tuple[str, ...] | list[str]) -> bool:
    """The host is one of the domains or a subdomain of one (`www.shop.example`)."""
    host = host.lower().rstrip(".")
    return bool(host) and any(
        host == d or host.endswith("." + d) for d in (d.lower().rstrip(".") for d in domains)
    )
