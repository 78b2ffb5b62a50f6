"""Cloudflare TXT content: values are sent as quoted character-strings and read back bare."""

from __future__ import annotations

import pytest

from serverctl.dns.cloudflare import quote_txt, unquote_txt


def test_short_value_is_one_quoted_string():
    assert quote_txt("lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM") == (
        '"lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM"'
    )


def test_long_value_is_split_at_255_bytes():
    content = quote_txt("a" * 300)
    assert content == '"' + "a" * 255 + '" "' + "a" * 45 + '"'
    assert unquote_txt(content) == "a" * 300


def test_split_keeps_multibyte_characters_whole():
    value = "é" * 200  # two bytes each
    parts = quote_txt(value).split('" "')
    assert len(parts) == 2
    assert unquote_txt(quote_txt(value)) == value


def test_quotes_and_backslashes_are_escaped():
    value = 'say "hi" \\ bye'
    assert quote_txt(value) == '"say \\"hi\\" \\\\ bye"'
    assert unquote_txt(quote_txt(value)) == value


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("bare-value", "bare-value"),  # made before quoting was the norm
        ('"v=spf1 -all"', "v=spf1 -all"),
        ('"one" "two"', "onetwo"),
        ('""', ""),
        ('"unterminated', '"unterminated'),
        ('"a" trailing', '"a" trailing'),
    ],
)
def test_content_reads_as_its_value(content: str, value: str):
    assert unquote_txt(content) == value
