"""How an SMS body is encoded on the air, and how many segments it is billed as.

A text that fits the GSM 03.38 (3GPP TS 23.038) default alphabet travels as GSM-7,
7 bits a character; one character outside it, a curly quote or an emoji, turns the
whole message into UCS-2, 16 bits a character. A single SMS carries 140 octets:
160 GSM-7 septets or 70 UCS-2 code units. Longer texts are split into concatenated
segments, each giving 6 octets to the User Data Header that numbers the parts, so
153 septets or 67 code units a segment (Twilio, "What is the SMS character limit?",
https://www.twilio.com/docs/glossary/what-sms-character-limit).

Only the counting lives here; connectors send text and the provider encodes it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["Encoding", "encoding_of", "segments", "utf16_length"]


class Encoding(enum.StrEnum):
    GSM_7 = "GSM-7"
    UCS_2 = "UCS-2"


# 3GPP TS 23.038 §6.2.1, the default alphabet in code order (0x00-0x7F). 0x1B is the
# escape to the extension table, not a character of its own, so it is left out below.
_GSM_DEFAULT_TABLE: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
_GSM_BASIC: Final = frozenset(_GSM_DEFAULT_TABLE) - {"\x1b"}

# 3GPP TS 23.038 §6.2.1.1, the default extension table: each is sent as ESC + a
# septet, so it costs two septets. (Form feed is the page break, 0x1B 0x0A.)
_GSM_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

# Septets (GSM-7) or UTF-16 code units (UCS-2): one message alone, then a segment of
# a concatenated message. See the module docstring for the source.
_CAPACITY: Final = {Encoding.GSM_7: (160, 153), Encoding.UCS_2: (70, 67)}


def encoding_of(text: str) -> Encoding:
    """GSM-7 when every character is in the default alphabet or its extension table."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return Encoding.GSM_7
    return Encoding.UCS_2


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units: a character beyond U+FFFF (most emoji) counts 2."""
    return len(text.encode("utf-16-le")) // 2


def segments(text: str) -> tuple[Encoding, int]:
    """The encoding ``text`` needs and how many SMS segments it is sent as (0 for "").

    A character is never split across two segments: an extension-table character's
    escape and code stay together (TS 23.038 §6.2.1.1) and so do the two halves of a
    UTF-16 surrogate pair, so a character that does not fit opens the next segment.
    """
    encoding = encoding_of(text)
    if encoding is Encoding.GSM_7:
        units = [2 if ch in _GSM_EXTENSION else 1 for ch in text]
    else:
        units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    total = sum(units)
    single, per_segment = _CAPACITY[encoding]
    if total <= single:
        return encoding, 1 if total else 0
    count, used = 1, 0
    for size in units:
        if used + size > per_segment:
            count, used = count + 1, 0
        used += size
    return encoding, count
