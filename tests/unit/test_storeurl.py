"""Store URLs: one list of schemes, one way to read them, one way to hide secrets."""

from __future__ import annotations

import re

import pytest

from patgate.models import Change, ChangeKind
from patgate.storeurl import StoreUrlError, hide_password, parse_redis_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
        ("rediss://alice:hunter2@h:1/0?ssl_ca_certs=/ca.pem",
         "rediss://alice:***@h:1/0?ssl_ca_certs=/ca.pem"),
        ("redis://alice:hun/ter@2@h:1/0", "redis://alice:***@h:1/0"),
        ("redis://hunter2@h:1/0", "redis://***@h:1/0"),
        ("redis+sentinel://u:pw@s1:26379,s2:26380/svc/2?sentinel_password=hunter2",
         "redis+sentinel://u:***@s1:26379,s2:26380/svc/2?sentinel_password=***"),
        ("redis+cluster://u:hunter2@n1:1,n2:2", "redis+cluster://u:***@n1:1,n2:2"),
        ("redis://u:hunt?er2@h:1/0", "redis://u:***@h:1/0"),
        ("redis://u:hunt#er2@h:1/0", "redis://u:***@h:1/0"),
        ("redis+sentinel://s:1/svc?sentinel%5Fpassword=hunter2",
         "redis+sentinel://s:1/svc?sentinel%5Fpassword=***"),
        ("redis://h:1/0?%70assword=hunter2&db=1", "redis://h:1/0?%70assword=***&db=1"),
        ("sqlite:////var/lib/p.db", "sqlite:////var/lib/p.db"),
        ("no scheme at all", "no scheme at all"),
    ],
)  # fmt: skip
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown
    assert "hunter2" not in hide_password(url)


def test_a_sentinel_url_names_sentinels_service_db_and_both_passwords() -> None:
    parsed = parse_redis_url(
        "redis+sentinel://app:s%40cret@10.0.0.1,[::1]:26380/mymaster/3"
        "?sentinel_password=sp&socket_timeout=0.5"
    )
    assert parsed.hosts == (("10.0.0.1", 26379), ("::1", 26380))
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert (parsed.service, parsed.db) == ("mymaster", 3)
    assert parsed.options == {"sentinel_password": "sp", "socket_timeout": "0.5"}


def test_a_cluster_url_names_startup_nodes() -> None:
    parsed = parse_redis_url("redis+cluster://:pw@n1:7000,n2")
    assert parsed.hosts == (("n1", 7000), ("n2", 6379))
    assert (parsed.username, parsed.password, parsed.db) == (None, "pw", 0)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://s1:26379", "names the service"),
        ("redis+sentinel://s1:26379/svc/x", "the database number"),
        ("redis+cluster://n1:1/0", "has no path"),
        ("redis+cluster://n1:1?db=1", "'db' needs redis://"),
        ("redis+cluster://n1:port", "a port is not a number"),
        ("redis+cluster://n1:1,:2", "needs a host"),
        ("redis://h:1/0?sentinel_password=x", "needs redis+sentinel://"),
        ("redis+sentinel://s:1/svc?ssl_certfile=/c", "needs rediss://"),
    ],
)
def test_bad_redis_urls_say_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(error)):
        parse_redis_url(url)


def test_only_real_notices_are_read_back_from_the_channel() -> None:
    # LISTENING is the store's own marker, never something published.
    assert Change.decode("token:Abcd1234") == Change(ChangeKind.TOKEN, "Abcd1234")
    assert Change.decode("user:alice") == Change(ChangeKind.USER, "alice")
    assert Change.decode("listening:") is None
    assert Change.decode("nonsense") is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:s3cr/et@h1/mymaster",
        "redis+cluster://u:s3cr/et@h1:7000",
        "redis://:s3cr/et@h1:6379/0",
        "redis://h1:s3cret",
        "redis://u:s3cr?et@h1:6379/0",
        "redis://u:s3cr#et@h1:6379/0",
        "redis+sentinel://u:s3cr?et@h1/mymaster",
    ],
)
def test_no_piece_of_a_password_is_in_an_error(url: str) -> None:
    """SECURITY: a password with "/" or ":" in it splits where a parser does
    not expect it; whatever the error, it quotes no piece of it."""
    with pytest.raises(StoreUrlError) as caught:
        parse_redis_url(url)
    message = str(caught.value)
    assert "s3cr" not in message
    assert "et@" not in message
    if "@" in url:  # "h1:s3cret" reads as a host and port: nothing to hide
        assert "s3cr" not in hide_password(url)
