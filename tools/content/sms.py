"""How long an SMS is as the network counts it: GSM 03.38 septets, or UTF-16 units (UCS-2)
once any character is outside the GSM alphabet. One SMS holds 160 septets or 70 UCS-2 units."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

SmsEncoding = Literal["gsm-7", "ucs-2"]
GSM_SINGLE = 160
UCS2_SINGLE = 70

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each character takes an escape septet and its own.
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


class SmsLength(BaseModel):
    model_config = ConfigDict(frozen=True)

    encoding: SmsEncoding
    units: int
    limit: int

    @property
    def fits(self) -> bool:
        return self.units <= self.limit


def sms_length(text: str) -> SmsLength:
    """The length of `text` in the units of its encoding and the single-SMS limit for it."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units = sum(2 if c in _GSM_EXTENDED else 1 for c in text)
        return SmsLength(encoding="gsm-7", units=units, limit=GSM_SINGLE)
    units = len(text.encode("utf-16-le")) // 2
    return SmsLength(encoding="ucs-2", units=units, limit=UCS2_SINGLE)


def non_gsm_characters(text: str) -> list[str]:
    return sorted({c for c in text if c not in _GSM_BASIC and c not in _GSM_EXTENDED})
