"""The token and user life cycle on the real stores (SQLite file and Redis)."""

import pytest
from structlog.testing import capture_logs

from patgate import tokens
from patgate.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from patgate.models import ExpiryModel, TokenStatus, Usage
from patgate.service import Actor, Purge, TokenService

START = 1_800_000_000.0
PEPPER = b"test-pepper"
ADMIN = Actor("root", admin=True)
ALICE = Actor("alice")
BOB = Actor("bob")
SETS = {"files-rw": ("files:read", "files:write"), "everything": ("*",)}
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(store, clock):
    return TokenService(
        store, prefix="pgt", pepper=PEPPER, scope_sets=SETS, clock=clock
    )


@pytest.fixture
async def people(service):
    await service.add_user(
        ADMIN, "alice", scopes=("files:*", "env:read"), password=PASSWORD
    )
    await service.add_user(ADMIN, "bob")
    await service.add_user(ADMIN, "root", admin=True)


def assert_no_secrets(events, *secrets):
    text = repr(events)
    for secret in secrets:
        assert secret not in text


# users


async def test_add_user_stores_scopes_and_a_hashed_password(service, store):
    with capture_logs() as events:
        user = await service.add_user(
            ADMIN, "carol", scopes=("@files-rw", "env:read"), password=PASSWORD
        )
    assert user.scopes == ("files:read", "files:write", "env:read")
    stored = await store.get_user("carol")
    assert stored.scopes == user.scopes
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert events == [
        {
            "event": "user.created",
            "login": "carol",
            "actor": "root",
            "admin": False,
            "scopes": user.scopes,
            "log_level": "info",
        }
    ]
    assert_no_secrets(events, PASSWORD, stored.password_hash)


async def test_add_user_defaults_to_all_scopes_and_no_password(service, store):
    user = await service.add_user(ADMIN, "dave")
    assert user.scopes == ("*",)
    assert (await store.get_user("dave")).password_hash is None


@pytest.mark.parametrize("login", ["", "-alice", "al ice", "a" * 65, "al:ice", "é"])
async def test_add_user_refuses_bad_logins(service, login):
    with pytest.raises(UsageError, match="invalid login"):
        await service.add_user(ADMIN, login)


async def test_add_user_refuses_duplicates_short_passwords_and_non_admins(
    service, people
):
    with pytest.raises(ConflictError, match="user alice already exists"):
        await service.add_user(ADMIN, "alice")
    with pytest.raises(UsageError, match="password"):
        await service.add_user(ADMIN, "erin", password="short")
    with pytest.raises(PermissionDeniedError):
        await service.add_user(ALICE, "mallory", admin=True)
    with pytest.raises(UsageError, match="unknown scope set"):
        await service.add_user(ADMIN, "erin", scopes=("@nope",))


async def test_list_users_is_for_admins(service, people):
    assert [u.login for u in await service.list_users(ADMIN)] == [
        "alice",
        "bob",
        "root",
    ]
    with pytest.raises(PermissionDeniedError):
        await service.list_users(ALICE)


async def test_authenticate_gives_one_answer_for_every_failure(service, people):
    assert (await service.authenticate("alice", PASSWORD)).login == "alice"
    await service.add_user(ADMIN, "nopass")
    await service.add_user(ADMIN, "gone", password=PASSWORD)
    await service.disable_user(ADMIN, "gone")
    messages = set()
    for login, password in [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("nopass", ""),
        ("nopass", PASSWORD),
        ("gone", PASSWORD),
        ("bad login!", PASSWORD),
    ]:
        with pytest.raises(AuthenticationError) as caught:
            await service.authenticate(login, password)
        messages.add(str(caught.value))
    assert messages == {"invalid login or password"}


async def test_set_password_by_self_or_admin_only(service, people):
    with capture_logs() as events:
        await service.set_password(ALICE, "alice", "a new password")
    assert (await service.authenticate("alice", "a new password")).login == "alice"
    with pytest.raises(AuthenticationError):
        await service.authenticate("alice", PASSWORD)
    await service.set_password(ADMIN, "alice", "admin chose this")
    with pytest.raises(PermissionDeniedError):
        await service.set_password(BOB, "alice", "bob chose this")
    assert events == [
        {
            "event": "user.password_changed",
            "login": "alice",
            "actor": "alice",
            "log_level": "info",
        }
    ]


async def test_disable_and_enable_user(service, store, people):
    with capture_logs() as events:
        await service.disable_user(ADMIN, "alice")
        await service.disable_user(ADMIN, "alice")  # no change, no event
        assert (await store.get_user("alice")).disabled
        with pytest.raises(PermissionDeniedError, match="alice is disabled"):
            await service.create_token(ADMIN, "alice")
        await service.enable_user(ADMIN, "alice")
    assert not (await store.get_user("alice")).disabled
    assert [e["event"] for e in events] == ["user.disabled", "user.enabled"]
    with pytest.raises(PermissionDeniedError):
        await service.disable_user(ALICE, "bob")
    with pytest.raises(NotFoundError, match="no user nobody"):
        await service.disable_user(ADMIN, "nobody")


async def test_set_user_scopes(service, store, people):
    await service.set_user_scopes(ADMIN, "bob", ("@files-rw",))
    assert (await store.get_user("bob")).scopes == ("files:read", "files:write")
    with pytest.raises(PermissionDeniedError):
        await service.set_user_scopes(BOB, "bob", ("*",))


# creating tokens


async def test_create_token_defaults(service, store, people):
    with capture_logs() as events:
        record, value = await service.create_token(ALICE, "alice", name="laptop")
    parsed = tokens.parse_token(value, "pgt")
    assert parsed is not None
    assert parsed.token_id == record.id
    stored = await store.get_token(record.id)
    assert stored == record
    assert stored.token_hash == tokens.hash_token(value, PEPPER)
    assert record.scopes == ("*",)
    assert record.expiry is ExpiryModel.NEVER
    assert record.expires_at is None
    assert record.created_by == "alice"
    assert record.created_at == START
    assert record.status is TokenStatus.ACTIVE
    assert events == [
        {
            "event": "token.created",
            "token_id": record.id,
            "owner": "alice",
            "actor": "alice",
            "log_level": "info",
        }
    ]
    assert_no_secrets(events, value, record.token_hash.hex())


async def test_create_token_with_every_setting(service, people):
    record, _ = await service.create_token(
        ADMIN,
        "alice",
        name="ci",
        scopes=("@files-rw", "env:read"),
        expires_at=START + 86400,
        allowed_cidrs=("10.1.2.3/24", "2001:db8::1", "10.1.2.0/24"),
        project="alpha",
        rate_limit=60,
    )
    # A set stays a name: the token follows the set's definition (issue 16).
    assert record.scopes == ("@files-rw", "env:read")
    assert record.expiry is ExpiryModel.HARD
    assert record.expires_at == START + 86400
    assert record.allowed_cidrs == ("10.1.2.0/24", "2001:db8::1/128")
    assert record.project == "alpha"
    assert record.rate_limit == 60
    assert record.created_by == "root"


async def test_subset_rule_names_the_missing_scopes(service, people):
    with pytest.raises(PermissionDeniedError) as caught:
        await service.create_token(
            ALICE, "alice", scopes=("files:read", "admin:write", "env:*")
        )
    assert str(caught.value) == (
        "token scopes exceed what alice holds: admin:write, env:*"
    )
    # A node scope only narrows a token: an owner confined to no node may
    # grant one (this used to be refused); one confined to nodes only inside.
    await service.create_token(ADMIN, "alice", scopes=("node:/dav:rw",))
    await service.add_user(ADMIN, "carol", scopes=("files:*", "node:/dav/c:r"))
    with pytest.raises(PermissionDeniedError, match="node:/dav/d:r"):
        await service.create_token(ADMIN, "carol", scopes=("node:/dav/d:r",))
    with pytest.raises(PermissionDeniedError, match="node:/dav/c/x:rw"):
        await service.create_token(ADMIN, "carol", scopes=("node:/dav/c/x:rw",))
    await service.create_token(ADMIN, "carol", scopes=("node:/dav/c/x:r",))
    # a set the owner holds all of, and '*' (whatever the owner holds) pass
    await service.create_token(ALICE, "alice", scopes=("@files-rw",))
    await service.create_token(ALICE, "alice", scopes=("@everything",))
    record, _ = await service.create_token(BOB, "bob", scopes=("node:/dav/b:r",))
    assert record.scopes == ("node:/dav/b:r",)


async def test_users_create_tokens_only_for_themselves(service, people):
    with pytest.raises(PermissionDeniedError):
        await service.create_token(ALICE, "bob")
    record, _ = await service.create_token(ADMIN, "bob")
    assert record.owner == "bob"
    with pytest.raises(NotFoundError, match="no user nobody"):
        await service.create_token(ADMIN, "nobody")


@pytest.mark.parametrize(
    ("settings", "msg"),
    [
        ({"allowed_cidrs": ("10.0.0.0/33",)}, "invalid CIDR '10.0.0.0/33'"),
        ({"allowed_cidrs": ("example.com",)}, "invalid CIDR 'example.com'"),
        ({"rate_limit": 0}, "invalid rate limit"),
        ({"rate_limit": -5}, "invalid rate limit"),
        ({"expires_at": START - 1}, "in the past"),
        ({"expires_at": START + 10, "sliding": 60}, "choose one expiry"),
        ({"sliding": 0}, "invalid sliding window"),
        ({"max_lifetime": -1}, "invalid max lifetime"),
        ({"name": "x" * 201}, "invalid name"),
        ({"name": "two\nlines"}, "control characters"),
        ({"scopes": ("files read",)}, "invalid scope"),
        ({"scopes": ("@nope",)}, "unknown scope set"),
    ],
)
async def test_create_token_refuses_bad_settings(service, store, people, settings, msg):
    with pytest.raises(UsageError, match=msg):
        await service.create_token(ADMIN, "bob", **settings)
    assert await store.list_tokens("bob") == []


async def test_taken_ids_are_retried(store, clock, people):
    chars = iter(["SameId01", "s" * 32, "SameId01", "t" * 32, "OtherId1", "u" * 32])
    service = TokenService(
        store, pepper=PEPPER, clock=clock, random_chars=lambda n: next(chars)
    )
    first, _ = await service.create_token(ADMIN, "bob")
    second, value = await service.create_token(ADMIN, "bob")
    assert (first.id, second.id) == ("SameId01", "OtherId1")
    assert value.startswith("pgt_OtherId1uuu")


# expiry


async def test_hard_expiry_is_seen_and_audited_once(service, clock, people):
    record, _ = await service.create_token(ALICE, "alice", expires_at=START + 1)
    assert (await service.get_token(ALICE, record.id)).status_at(clock()) == "active"
    clock.advance(2)
    with capture_logs() as events:
        seen = await service.get_token(ALICE, record.id)
        again = await service.list_tokens(ALICE)
    assert seen.status_at(clock()) is TokenStatus.EXPIRED
    assert again[0].to_public(clock())["status"] == "expired"
    assert events == [
        {
            "event": "token.expired",
            "token_id": record.id,
            "owner": "alice",
            "actor": "alice",
            "log_level": "info",
        }
    ]


async def test_max_lifetime_alone_makes_a_hard_expiry(service, people):
    record, _ = await service.create_token(ALICE, "alice", max_lifetime=3600)
    assert record.expiry is ExpiryModel.HARD
    assert record.expires_at == START + 3600
    capped, _ = await service.create_token(
        ALICE, "alice", expires_at=START + 86400, max_lifetime=3600
    )
    assert capped.expires_at == START + 3600


async def test_sliding_expiry_moves_with_use_up_to_max_lifetime(
    service, store, clock, people
):
    record, _ = await service.create_token(
        ALICE, "alice", sliding=3600, max_lifetime=3 * 3600
    )
    assert record.expiry is ExpiryModel.SLIDING
    assert record.expires_at == START + 3600
    for _ in range(4):
        clock.advance(1800)
        current = await service.get_token(ALICE, record.id)
        slid = current.slid_expiry(clock())
        await store.record_usage(
            [Usage(record.id, used_at=clock(), ip="10.0.0.1", count=1, expires_at=slid)]
        )
        moved = await service.get_token(ALICE, record.id)
        assert moved.expires_at == min(clock() + 3600, START + 3 * 3600)
        assert moved.status_at(clock()) is TokenStatus.ACTIVE
    assert moved.use_count == 4
    assert moved.last_used_ip == "10.0.0.1"
    clock.advance(3600)
    assert (await service.get_token(ALICE, record.id)).status is TokenStatus.EXPIRED


# reading tokens


async def test_tokens_of_others_look_like_no_token(service, clock, people):
    bobs, _ = await service.create_token(BOB, "bob")
    clock.advance(1)
    alices, _ = await service.create_token(ALICE, "alice")
    with pytest.raises(NotFoundError) as caught:
        await service.get_token(ALICE, bobs.id)
    assert str(caught.value) == f"no token {bobs.id}"
    with pytest.raises(NotFoundError) as unknown:
        await service.get_token(ALICE, "Nope1234")
    assert str(unknown.value) == "no token Nope1234"
    assert [r.id for r in await service.list_tokens(ALICE)] == [alices.id]
    with pytest.raises(PermissionDeniedError):
        await service.list_tokens(ALICE, "bob")
    assert [r.id for r in await service.list_tokens(ADMIN)] == [bobs.id, alices.id]
    assert [r.id for r in await service.list_tokens(ADMIN, "bob")] == [bobs.id]
    assert (await service.get_token(ADMIN, alices.id)).owner == "alice"
    with pytest.raises(NotFoundError, match="no user nobody"):
        await service.list_tokens(ADMIN, "nobody")


async def test_a_pasted_value_is_never_echoed_as_an_id(service, people):
    _, value = await service.create_token(ALICE, "alice")
    with pytest.raises(UsageError) as caught:
        await service.get_token(ALICE, value)
    assert value not in str(caught.value)


# editing


async def test_edit_changes_only_what_is_given(service, store, clock, people):
    record, _ = await service.create_token(
        ALICE, "alice", name="old", scopes=("files:read",), project="p", rate_limit=5
    )
    clock.advance(10)
    with capture_logs() as events:
        edited = await service.edit_token(ALICE, record.id, name="new")
    assert edited == record.with_changes(name="new", updated_at=START + 10)
    # The store counts the settings version itself (usage from before is void).
    assert await store.get_token(record.id) == edited.with_changes(version=1)
    assert events[0]["event"] == "token.edited"
    assert events[0]["fields"] == ["name"]
    assert events[0]["token_id"] == record.id

    edited = await service.edit_token(
        ALICE,
        record.id,
        scopes=("@files-rw",),
        sliding=600,
        allowed_cidrs=("192.0.2.0/24",),
        project=None,
        rate_limit=None,
    )
    assert edited.scopes == ("@files-rw",)
    assert edited.expiry is ExpiryModel.SLIDING
    assert edited.expires_at == clock() + 600
    assert edited.allowed_cidrs == ("192.0.2.0/24",)
    assert (edited.project, edited.rate_limit, edited.name) == (None, None, "new")

    never = await service.edit_token(ALICE, record.id, expires_at=None, sliding=None)
    assert (never.expiry, never.expires_at) == (ExpiryModel.NEVER, None)


async def test_edit_rechecks_the_subset_rule(service, people):
    record, _ = await service.create_token(ALICE, "alice", scopes=("files:read",))
    with pytest.raises(PermissionDeniedError, match="admin:all"):
        await service.edit_token(ADMIN, record.id, scopes=("admin:all",))


async def test_edit_max_lifetime_recaps_from_creation(service, clock, people):
    record, _ = await service.create_token(ALICE, "alice", sliding=3600)
    clock.advance(600)
    capped = await service.edit_token(ALICE, record.id, max_lifetime=1800)
    assert capped.expiry is ExpiryModel.SLIDING
    assert capped.expires_at == START + 1800
    assert capped.max_lifetime == 1800


async def test_edit_revives_an_expired_token_and_refuses_a_revoked_one(
    service, clock, people
):
    record, _ = await service.create_token(ALICE, "alice", expires_at=START + 5)
    clock.advance(10)
    assert (await service.get_token(ALICE, record.id)).status is TokenStatus.EXPIRED
    revived = await service.edit_token(ALICE, record.id, expires_at=clock() + 60)
    assert revived.status_at(clock()) is TokenStatus.ACTIVE
    assert revived.status is TokenStatus.ACTIVE
    await service.revoke_tokens(ALICE, [record.id])
    with pytest.raises(ConflictError, match="is revoked"):
        await service.edit_token(ALICE, record.id, name="again")
    with pytest.raises(ConflictError, match="is revoked"):
        await service.regenerate_token(ALICE, record.id)


async def test_edit_without_changes_or_on_others_tokens(service, people):
    record, _ = await service.create_token(BOB, "bob")
    with pytest.raises(UsageError, match="nothing to change"):
        await service.edit_token(BOB, record.id)
    with pytest.raises(NotFoundError):
        await service.edit_token(ALICE, record.id, name="mine now")


# regenerate, copy, revoke


async def test_regenerate_kills_the_old_value_at_once(service, store, clock, people):
    record, old_value = await service.create_token(ALICE, "alice", scopes=("env:read",))
    clock.advance(5)
    with capture_logs() as events:
        _, value = await service.regenerate_token(ALICE, record.id)
    assert value != old_value
    assert tokens.parse_token(value, "pgt").token_id == record.id
    stored = await store.get_token(record.id)
    assert stored.token_hash == tokens.hash_token(value, PEPPER)
    assert stored.token_hash != tokens.hash_token(old_value, PEPPER)
    assert stored.previous_hash is None
    assert stored.scopes == ("env:read",)
    assert stored.created_at == START
    assert events[0]["event"] == "token.regenerated"
    assert_no_secrets(events, value, old_value)


async def test_regenerate_with_grace_keeps_the_old_hash_until_the_bound(
    service, store, clock, people
):
    record, old_value = await service.create_token(ALICE, "alice")
    regenerated, _ = await service.regenerate_token(ALICE, record.id, grace=300)
    stored = await store.get_token(record.id)
    assert stored.previous_hash == tokens.hash_token(old_value, PEPPER)
    assert stored.previous_hash_until == START + 300
    assert regenerated.previous_hash_until == START + 300


async def test_copy_makes_a_new_token_with_the_same_settings(
    service, store, clock, people
):
    record, value = await service.create_token(
        ALICE,
        "alice",
        name="ci",
        scopes=("files:read",),
        expires_at=START + 3600,
        allowed_cidrs=("10.0.0.0/8",),
        project="alpha",
        rate_limit=10,
    )
    clock.advance(1000)
    with capture_logs() as events:
        copy, copy_value = await service.copy_token(ADMIN, record.id)
    assert copy.id != record.id
    assert copy_value != value
    assert (copy.name, copy.scopes, copy.allowed_cidrs, copy.project) == (
        "ci",
        ("files:read",),
        ("10.0.0.0/8",),
        "alpha",
    )
    assert copy.rate_limit == 10
    assert copy.expiry is ExpiryModel.HARD
    assert copy.expires_at == clock() + 3600
    assert copy.created_by == "root"
    assert copy.use_count == 0
    assert (await store.get_token(copy.id)).token_hash == tokens.hash_token(
        copy_value, PEPPER
    )
    assert (await store.get_token(record.id)).token_hash == record.token_hash
    assert events[0]["event"] == "token.copied"
    assert events[0]["source_id"] == record.id


async def test_copy_of_sliding_and_never_tokens(service, clock, people):
    sliding, _ = await service.create_token(ALICE, "alice", sliding=60)
    never, _ = await service.create_token(ALICE, "alice")
    clock.advance(500)
    sliding_copy, _ = await service.copy_token(ALICE, sliding.id)
    never_copy, _ = await service.copy_token(ALICE, never.id)
    assert sliding_copy.expiry is ExpiryModel.SLIDING
    assert sliding_copy.expires_at == clock() + 60
    assert never_copy.expiry is ExpiryModel.NEVER


async def test_copy_rechecks_the_subset_rule(service, people):
    record, _ = await service.create_token(ALICE, "alice", scopes=("files:write",))
    await service.set_user_scopes(ADMIN, "alice", ("files:read",))
    with pytest.raises(PermissionDeniedError, match="files:write"):
        await service.copy_token(ALICE, record.id)


async def test_revoke_many_or_none(service, store, people):
    first, _ = await service.create_token(ALICE, "alice")
    second, _ = await service.create_token(ALICE, "alice")
    bobs, _ = await service.create_token(BOB, "bob")
    with pytest.raises(NotFoundError, match=f"no token Nope1234, {bobs.id}"):
        await service.revoke_tokens(ALICE, [first.id, "Nope1234", bobs.id])
    assert (await store.get_token(first.id)).status is TokenStatus.ACTIVE
    with capture_logs() as events:
        revoked = await service.revoke_tokens(ALICE, [first.id, second.id, first.id])
    assert revoked.ids == [first.id, second.id]
    assert revoked.already == []
    for record in (first, second):
        assert (await store.get_token(record.id)).status is TokenStatus.REVOKED
    assert [(e["event"], e["token_id"]) for e in events] == [
        ("token.revoked", first.id),
        ("token.revoked", second.id),
    ]
    # revoking again is not an error and not a new event
    with capture_logs() as again:
        repeat = await service.revoke_tokens(ADMIN, [first.id, second.id])
    assert again == []
    assert repeat.already == [first.id, second.id]
    with pytest.raises(UsageError):
        await service.revoke_tokens(ADMIN, [])


async def test_revoke_drops_a_grace_period(service, store, people):
    record, _ = await service.create_token(ALICE, "alice")
    await service.regenerate_token(ALICE, record.id, grace=600)
    await service.revoke_tokens(ALICE, [record.id])
    stored = await store.get_token(record.id)
    assert stored.previous_hash is None
    assert stored.status_at(START) is TokenStatus.REVOKED


# report-leak


async def test_report_leak_revokes_only_matching_values(service, store, people):
    leaked, leaked_value = await service.create_token(ALICE, "alice")
    kept, kept_value = await service.create_token(BOB, "bob")
    forged = tokens.format_token("pgt", kept.id, "x" * 32)  # right id, wrong secret
    unknown = tokens.new_token("pgt").value
    garbage = ["", "hello", leaked_value[:-1] + "!", "pgt_" + "A" * 46]
    with capture_logs() as events:
        answer = await service.report_leak([leaked_value, forged, unknown, *garbage])
    assert answer == 3 + len(garbage)
    assert (await store.get_token(leaked.id)).status is TokenStatus.REVOKED
    assert (await store.get_token(kept.id)).status is TokenStatus.ACTIVE
    assert [e["event"] for e in events] == ["token.revoked", "token.leak_reported"]
    assert all(e["token_id"] == leaked.id for e in events)
    assert_no_secrets(events, leaked_value, kept_value, forged)
    # the answer does not depend on what was live
    assert await service.report_leak([leaked_value, forged, unknown, *garbage]) == (
        answer
    )
    assert await service.report_leak(["a"] * 3 + ["b", "c", "d", "e"]) == 5


async def test_report_leak_of_a_value_in_grace_revokes_the_token(
    service, store, people
):
    record, old_value = await service.create_token(ALICE, "alice")
    await service.regenerate_token(ALICE, record.id, grace=600)
    await service.report_leak([old_value])
    assert (await store.get_token(record.id)).status is TokenStatus.REVOKED


async def test_report_leak_is_bounded(service):
    with pytest.raises(UsageError, match="too many"):
        await service.report_leak([f"value{i}" for i in range(101)])


# the whole life cycle, as the audit log sees it


async def test_audit_events_never_carry_values_hashes_or_passwords(
    service, store, clock, people
):
    with capture_logs() as events:
        await service.add_user(ADMIN, "zed", password="zed password 1")
        await service.set_password(ADMIN, "zed", "zed password 2")
        record, value1 = await service.create_token(ADMIN, "zed", expires_at=START + 9)
        await service.edit_token(ADMIN, record.id, name="renamed")
        _, value2 = await service.regenerate_token(ADMIN, record.id, grace=5)
        copy, value3 = await service.copy_token(ADMIN, record.id)
        clock.advance(20)
        await service.list_tokens(ADMIN, "zed")
        await service.revoke_tokens(ADMIN, [copy.id])
        await service.report_leak([value2])
        await service.disable_user(ADMIN, "zed")
        await service.enable_user(ADMIN, "zed")
    hashes = [tokens.hash_token(v, PEPPER).hex() for v in (value1, value2, value3)]
    password_hash = (await store.get_user("zed")).password_hash
    assert_no_secrets(
        events,
        value1,
        value2,
        value3,
        "zed password 1",
        "zed password 2",
        password_hash,
        *hashes,
        PEPPER.decode(),
    )
    assert [e["event"] for e in events] == [
        "user.created",
        "user.password_changed",
        "token.created",
        "token.edited",
        "token.regenerated",
        "token.copied",
        "token.expired",
        "token.expired",
        "token.revoked",
        "token.revoked",
        "token.leak_reported",
        "user.disabled",
        "user.enabled",
    ]
    for event in events:
        assert event["actor"]
        if event["event"].startswith("token."):
            assert event["owner"] == "zed"
            assert tokens.looks_like_token_id(event["token_id"])


# remove, purge, renew (issue 16)

DAY = 86400


async def test_purge_counts_age_from_revocation_or_expiry(service, people, clock):
    revoked, _ = await service.create_token(ALICE, "alice", name="r")
    expiring, _ = await service.create_token(
        ALICE, "alice", name="e", expires_at=clock.now + DAY
    )
    live, _ = await service.create_token(ALICE, "alice", name="live")
    await service.revoke_tokens(ALICE, [revoked.id])
    clock.advance(20 * DAY)
    month = Purge(revoked=True, expired=True, older_than=30 * DAY)
    assert await service.purge_tokens(ALICE, month) == []
    clock.advance(11 * DAY)  # revoked 31 days ago, expired 30 days ago
    dry = await service.purge_tokens(ALICE, month, dry_run=True)
    assert {r.id for r in dry} == {revoked.id, expiring.id}
    assert len(await service.list_tokens(ALICE)) == 3
    with capture_logs() as events:
        purged = await service.purge_tokens(ALICE, month)
    assert {r.id for r in purged} == {revoked.id, expiring.id}
    assert [r.id for r in await service.list_tokens(ALICE)] == [live.id]
    audit = {e["token_id"]: e for e in events if e["event"] == "token.purged"}
    assert audit[expiring.id]["status"] == "expired"
    assert audit[revoked.id]["status"] == "revoked"
    assert audit[revoked.id]["name"] == "r"
    with pytest.raises(PermissionDeniedError):
        await service.purge_tokens(ALICE, Purge(revoked=True, owner="bob"))
    with pytest.raises(UsageError, match="revoked, expired or both"):
        await service.purge_tokens(ADMIN, Purge())


async def test_renew_keeps_the_model_and_respects_max_lifetime(service, people, clock):
    sliding, old = await service.create_token(
        ALICE, "alice", sliding=3600, max_lifetime=10 * DAY
    )
    clock.advance(2 * 3600)
    assert (await service.get_token(ALICE, sliding.id)).status is TokenStatus.EXPIRED
    renewed, value = await service.renew_token(ALICE, sliding.id)
    assert value != old
    assert (renewed.expiry, renewed.sliding_window) == (ExpiryModel.SLIDING, 3600)
    assert renewed.expires_at == clock.now + 3600
    assert renewed.status is TokenStatus.ACTIVE
    clock.advance(11 * DAY)
    with pytest.raises(UsageError, match="past its max lifetime"):
        await service.renew_token(ALICE, sliding.id)
    lifted, _ = await service.renew_token(
        ALICE, sliding.id, expires_at=clock.now + DAY, max_lifetime=None
    )
    assert (lifted.expiry, lifted.max_lifetime) == (ExpiryModel.HARD, None)
    hard, _ = await service.create_token(ALICE, "alice", expires_at=clock.now + 60)
    clock.advance(120)
    again, _ = await service.renew_token(ALICE, hard.id)
    assert again.expires_at == clock.now + 30 * DAY


async def test_remove_revokes_then_deletes_and_audits(service, people):
    mine, value = await service.create_token(ALICE, "alice", name="gone")
    bobs, _ = await service.create_token(BOB, "bob")
    with pytest.raises(NotFoundError, match="nothing removed"):
        await service.remove_tokens(ALICE, [mine.id, bobs.id])
    with capture_logs() as events:
        removed = await service.remove_tokens(ALICE, [mine.id, mine.id])
    assert [r.id for r in removed] == [mine.id]
    assert removed[0].status is TokenStatus.REVOKED
    assert await service.store.get_token(mine.id) is None
    assert [e["event"] for e in events] == ["token.revoked", "token.removed"]
    assert events[1]["name"] == "gone"
    assert_no_secrets(events, value)
    with pytest.raises(NotFoundError):
        await service.remove_tokens(ALICE, [mine.id])
