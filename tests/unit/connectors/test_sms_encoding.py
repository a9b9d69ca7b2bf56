import pytest

from connectors.sms_encoding import Encoding, encoding_of, segments, utf16_length

GSM = Encoding.GSM_7
UCS = Encoding.UCS_2
EMOJI = "\N{GRINNING FACE}"  # U+1F600, a UTF-16 surrogate pair


# One row per rule: GSM-7 160 alone / 153 a segment, extension characters 2 septets,
# UCS-2 70 alone / 67 a segment in UTF-16 code units, no character split across segments.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (GSM, 0)),
        ("Hello", (GSM, 1)),
        ("a" * 160, (GSM, 1)),
        ("a" * 161, (GSM, 2)),
        ("a" * 306, (GSM, 2)),
        ("a" * 307, (GSM, 3)),
        # The default alphabet's non-ASCII letters are single septets.
        ("Café à Zürich, 5 £, ¿qué?, ΔΦΓΛΩΠΨΣΘΞ ÆæßÉ §¡", (GSM, 1)),
        ("\r\n", (GSM, 1)),
        # Extension table: escape + code, two septets each.
        ("€" * 80, (GSM, 1)),
        ("€" * 81, (GSM, 2)),
        ("a" * 159 + "[", (GSM, 2)),
        ("a" * 158 + "[", (GSM, 1)),
        ("{}[]~|^\\\f", (GSM, 1)),
        # 306 septets would be two segments, but "€" may not straddle the boundary.
        ("a" * 152 + "€" + "a" * 152, (GSM, 3)),
        # One character outside GSM-7 makes the whole text UCS-2.
        ("ç", (UCS, 1)),  # only the capital Ç is in the default alphabet
        ("`", (UCS, 1)),
        ("It\N{RIGHT SINGLE QUOTATION MARK}s", (UCS, 1)),
        ("Привет", (UCS, 1)),
        ("a" * 70, (GSM, 1)),
        ("a" * 69 + "ç", (UCS, 1)),
        ("a" * 70 + "ç", (UCS, 2)),
        ("ç" * 134, (UCS, 2)),
        ("ç" * 135, (UCS, 3)),
        # An emoji is two UTF-16 code units.
        ("Hi " + EMOJI, (UCS, 1)),
        ("a" * 68 + EMOJI, (UCS, 1)),
        ("a" * 69 + EMOJI, (UCS, 2)),
        (EMOJI * 35, (UCS, 1)),
        (EMOJI * 36, (UCS, 2)),
        # 134 code units would be two segments; the surrogate pair is never split.
        ("a" * 66 + EMOJI + "a" * 66, (UCS, 3)),
    ],
)
def test_segments(text: str, expected: tuple[Encoding, int]) -> None:
    assert segments(text) == expected


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("plain", GSM), ("€uro [x]", GSM), ("é", GSM), ("ê", UCS), (EMOJI, UCS), ("\t", UCS)],
)
def test_encoding_of(text: str, encoding: Encoding) -> None:
    assert encoding_of(text) is encoding


def test_encoding_is_a_string() -> None:
    assert segments("x") == ("GSM-7", 1)
    assert segments("ê")[0] == "UCS-2"


@pytest.mark.parametrize(
    ("text", "length"), [("", 0), ("abc", 3), ("€", 1), ("ç", 1), (EMOJI, 2), ("a" + EMOJI, 3)]
)
def test_utf16_length(text: str, length: int) -> None:
    assert utf16_length(text) == length
