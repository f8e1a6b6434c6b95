"""The token format, frozen by golden vectors, and its parser under fuzzing."""

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patgate import tokens

GOLDEN = [
    (
        "pgt",
        "AbCd1234",
        "0123456789abcdefghijABCDEFGHIJkl",
        "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI",
    ),
    ("pgt", "00000000", "0" * 32, "pgt_00000000000000000000000000000000000000000UBqSV"),
    (
        "acme",
        "zzzzzzzz",
        "Z" * 32,
        "acme_zzzzzzzzZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ47940D",
    ),
]


@pytest.mark.parametrize(("prefix", "token_id", "secret", "value"), GOLDEN)
def test_golden_vectors_format_and_parse(prefix, token_id, secret, value):
    assert tokens.format_token(prefix, token_id, secret) == value
    parsed = tokens.parse_token(value, prefix)
    assert parsed is not None
    assert parsed.token_id == token_id
    assert parsed.value == value


def test_golden_hash_is_sha256_of_pepper_then_value():
    value = GOLDEN[0][3]
    assert tokens.hash_token(value, b"pepper").hex() == (
        "261c410e6f7c1de4a54ed8bcd7b9b8e1f18a9131e9ebe4388951d357b8ce28d3"
    )


def test_checksum_is_crc32_in_base62():
    head = "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl"
    number = zlib.crc32(head.encode())
    decoded = 0
    for char in tokens.checksum(head):
        decoded = decoded * 62 + tokens.BASE62.index(char)
    assert decoded == number


def test_new_token_has_the_specified_shape():
    token = tokens.new_token()
    assert token.value.startswith("pgt_")
    assert len(token.value) == 4 + 8 + 32 + 6
    assert token.value[4:12] == token.token_id
    assert tokens.parse_token(token.value) == token


def test_new_tokens_differ():
    assert len({tokens.new_token().value for _ in range(200)}) == 200


def test_regenerate_keeps_the_id():
    token = tokens.new_token(token_id="KeepMe12")
    assert token.token_id == "KeepMe12"


def test_repr_never_shows_the_value():
    token = tokens.new_token()
    assert token.value not in repr(token)
    assert token.value not in str(token)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "pgt_",
        "pgt",
        "Bearer pgt_x",
        GOLDEN[0][3] + "x",
        GOLDEN[0][3][:-1],
        "xyz" + GOLDEN[0][3][3:],
        GOLDEN[0][3].replace("_", "-"),
        GOLDEN[0][3][:10] + "!" + GOLDEN[0][3][11:],
        GOLDEN[0][3][:10] + "é" + GOLDEN[0][3][11:],
    ],
)
def test_malformed_values_are_refused(value):
    assert tokens.parse_token(value) is None


def test_wrong_prefix_is_refused():
    assert tokens.parse_token(GOLDEN[0][3], "acme") is None


@given(st.text(max_size=120))
def test_parse_never_raises(text):
    assert tokens.parse_token(text) is None or text.startswith("pgt_")


@given(st.binary(max_size=80))
def test_parse_never_raises_on_decoded_bytes(raw):
    tokens.parse_token(raw.decode("latin-1"))


_body = st.text(alphabet=tokens.BASE62, min_size=40, max_size=40)


@given(_body, st.integers(min_value=4, max_value=49), st.sampled_from(tokens.BASE62))
def test_any_single_character_change_is_caught(body, position, char):
    value = tokens.format_token("pgt", body[:8], body[8:])
    mutated = value[:position] + char + value[position + 1 :]
    if mutated != value:
        # CRC32 detects every single-symbol error in the signed part, and a
        # changed checksum character no longer matches the CRC.
        assert tokens.parse_token(mutated) is None


@given(_body, st.integers(min_value=4, max_value=42))
def test_adjacent_swaps_are_caught(body, position):
    value = tokens.format_token("pgt", body[:8], body[8:])
    swapped = (
        value[:position] + value[position + 1] + value[position] + value[position + 2 :]
    )
    if swapped != value:
        assert tokens.parse_token(swapped) is None


def test_hashes_match_is_constant_time_compare():
    a = tokens.hash_token(GOLDEN[0][3], b"")
    assert tokens.hashes_match(a, a)
    assert not tokens.hashes_match(a, tokens.hash_token(GOLDEN[1][3], b""))
    assert tokens.hash_token(GOLDEN[0][3], b"p1") != tokens.hash_token(
        GOLDEN[0][3], b"p2"
    )


@given(st.text(max_size=80))
def test_token_id_of_agrees_with_parse_token(text):
    parsed = tokens.parse_token(text)
    assert tokens.token_id_of(text) == (parsed.token_id if parsed else None)


@pytest.mark.parametrize(("prefix", "token_id", "secret", "value"), GOLDEN)
def test_token_id_of_golden(prefix, token_id, secret, value):
    assert tokens.token_id_of(value, prefix) == token_id
    assert tokens.token_id_of(value[:-1] + "x", prefix) is None
