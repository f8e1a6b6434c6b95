"""Remove means gone, purge the dead, renew the expired (issue 16): the API
and the CLI against a running gateway, a real store and upstream."""

from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from patgate.models import ExpiryModel, TokenStatus
from patgate.service import Actor
from tests.gateway_harness import ADMIN, Gateway
from tests.integration.test_api import (
    ALICE,
    BOB,
    ROOT,
    call,
    create,
    refused_soon,
    start,
    through_gateway,
)
from tests.integration.test_cli import CONFIG, Cli


@pytest.fixture
async def gateway(make_gateway, upstream, sqlite_url) -> Gateway:
    return await start(make_gateway, sqlite_url, upstream)


@pytest.fixture
async def any_gateway(make_gateway, upstream, store_url) -> Gateway:
    return await start(make_gateway, store_url, upstream)


@pytest.fixture
def cli(tmp_path) -> Cli:
    (tmp_path / "gateway.yaml").write_text(CONFIG)
    cli = Cli(tmp_path)
    cli.ok("user", "add", "alice")
    return cli


DAY = 86400.0


async def age(gateway: Gateway, token_id: str, **changes: object) -> None:
    """Move a token into the past as a store write (the clock stays real)."""
    record = await gateway.store.get_token(token_id)
    assert record is not None
    await gateway.store.update_token(record.with_changes(**changes))


async def made(gateway: Gateway, owner: str = "alice", **fields: object) -> dict:
    """A token made through the service (no password check: quicker)."""
    record, value = await gateway.service.create_token(Actor(owner), owner, **fields)
    return {**record.to_public(time.time()), "token": value}


async def listed_ids(client, gateway, auth=ALICE, query: str = "") -> set[str]:
    answer = await call(client, gateway, "GET", "/tokens" + query, auth=auth)
    assert answer.status == 200, answer
    return {token["id"] for token in answer.body["tokens"]}


async def test_delete_removes_the_token_from_the_list_and_the_gateway(
    any_gateway, client
):
    gateway = any_gateway
    one, two, three, kept = [await made(gateway) for _ in range(4)]
    with capture_logs() as events:
        removed = await call(
            client, gateway, "DELETE", f"/tokens/{one['id']}", auth=ALICE
        )
    assert removed.status == 200
    assert (removed.body["id"], removed.body["status"]) == (one["id"], "revoked")
    assert await refused_soon(client, gateway, one["token"])
    shown = await call(client, gateway, "GET", f"/tokens/{one['id']}", auth=ALICE)
    assert shown.status == 404

    many = await call(
        client, gateway, "POST", "/tokens/remove",
        {"ids": [two["id"], three["id"]]}, auth=ALICE,
    )  # fmt: skip
    assert (many.status, many.body) == (200, {"removed": [two["id"], three["id"]]})
    assert await listed_ids(client, gateway) == {kept["id"]}
    assert await refused_soon(client, gateway, two["token"])
    assert await through_gateway(client, gateway, kept["token"]) == 200

    # The store forgets; the audit log keeps what the record said.
    audit = [e for e in events if e.get("token_id") == one["id"]]
    assert [e["event"] for e in audit] == ["token.revoked", "token.removed"]
    assert audit[1]["owner"] == "alice"
    assert audit[1]["actor"] == "alice"
    assert audit[1]["created_at"] == one["created_at"]
    assert one["token"] not in repr(events)


async def test_remove_is_all_or_nothing_and_never_someone_elses(gateway, client):
    mine = await made(gateway)
    bobs = await made(gateway, "bob")
    refused = await call(
        client, gateway, "POST", "/tokens/remove",
        {"ids": [mine["id"], bobs["id"]]}, auth=ALICE,
    )  # fmt: skip
    assert refused.status == 404
    assert refused.body["message"] == f"no token {bobs['id']}; nothing removed"
    assert await listed_ids(client, gateway) == {mine["id"]}
    assert await through_gateway(client, gateway, mine["token"]) == 200
    # An admin removes anyone's.
    answer = await call(client, gateway, "DELETE", f"/tokens/{bobs['id']}", auth=ROOT)
    assert answer.status == 200
    assert await listed_ids(client, gateway, BOB) == set()


async def test_purge_revoked_and_expired_older_than(gateway, client):
    now = time.time()
    old_revoked, new_revoked, old_expired, new_expired, live = [
        await made(gateway) for _ in range(5)
    ]
    bobs_revoked = await made(gateway, "bob")
    for token in (old_revoked, new_revoked, bobs_revoked):
        await gateway.service.revoke_tokens(ADMIN, [token["id"]])
    await age(gateway, old_revoked["id"], updated_at=now - 40 * DAY)
    await age(gateway, bobs_revoked["id"], updated_at=now - 40 * DAY)
    await age(gateway, old_expired["id"], expiry=ExpiryModel.HARD,
              expires_at=now - 31 * DAY)  # fmt: skip
    await age(gateway, new_expired["id"], expiry=ExpiryModel.HARD,
              expires_at=now - DAY)  # fmt: skip

    nothing = await call(client, gateway, "POST", "/tokens/purge", {}, auth=ALICE)
    assert nothing.status == 422
    assert "revoked, expired or both" in nothing.body["message"]
    theirs = await call(
        client, gateway, "POST", "/tokens/purge",
        {"revoked": True, "owner": "bob"}, auth=ALICE,
    )  # fmt: skip
    assert theirs.status == 403

    # A user purges only their own: bob's old revoked token stays.
    with capture_logs() as events:
        purged = await call(
            client, gateway, "POST", "/tokens/purge",
            {"revoked": True, "expired": True, "older_than": "30d"}, auth=ALICE,
        )  # fmt: skip
    assert purged.status == 200, purged
    assert {t["id"] for t in purged.body["purged"]} == {
        old_revoked["id"],
        old_expired["id"],
    }
    assert {t["status"] for t in purged.body["purged"]} == {"revoked", "expired"}
    assert await listed_ids(client, gateway) == {
        new_revoked["id"],
        new_expired["id"],
        live["id"],
    }
    assert sorted(e["token_id"] for e in events if e["event"] == "token.purged") == (
        sorted([old_revoked["id"], old_expired["id"]])
    )

    # An admin, everyone's, of any age.
    everyone = await call(
        client, gateway, "POST", "/tokens/purge", {"revoked": True}, auth=ROOT
    )
    assert {t["id"] for t in everyone.body["purged"]} == {
        new_revoked["id"],
        bobs_revoked["id"],
    }
    assert await listed_ids(client, gateway) == {new_expired["id"], live["id"]}
    assert await through_gateway(client, gateway, live["token"]) == 200


async def test_renew_an_expired_token(gateway, client):
    token = await create(client, gateway, name="ci", scopes=["api:read"],
                         expires_in="1d")  # fmt: skip
    path = f"/tokens/{token['id']}"
    await age(gateway, token["id"], expires_at=time.time() - 60)
    assert await refused_soon(client, gateway, token["token"])
    shown = await call(client, gateway, "GET", path, auth=ALICE)
    assert shown.body["status"] == "expired"

    renewed = await call(
        client, gateway, "POST", path + "/renew", {"expires_in": "30d"}, auth=ALICE
    )
    assert renewed.status == 201, renewed
    assert renewed.body["id"] == token["id"]
    assert renewed.body["status"] == "active"
    assert (renewed.body["name"], renewed.body["scopes"]) == ("ci", ["api:read"])
    assert renewed.body["token"] != token["token"]
    assert await through_gateway(client, gateway, renewed.body["token"]) == 200
    assert await through_gateway(client, gateway, token["token"]) == 401
    record = await gateway.store.get_token(token["id"])
    assert record is not None
    assert record.status is TokenStatus.ACTIVE
    assert record.expires_at == pytest.approx(time.time() + 30 * DAY, abs=60)

    # Without an expiry: a hard token for 30 days, a sliding one a new window.
    await call(client, gateway, "PATCH", path, {"sliding": "2h"}, auth=ALICE)
    await age(gateway, token["id"], expires_at=time.time() - 60)
    again = await call(client, gateway, "POST", path + "/renew", auth=ALICE)
    assert (again.status, again.body["sliding_window"]) == (201, "2h")
    record = await gateway.store.get_token(token["id"])
    assert record is not None
    assert record.expires_at == pytest.approx(time.time() + 7200, abs=60)

    never = await call(
        client, gateway, "POST", path + "/renew", {"expires_at": None}, auth=ALICE
    )
    assert (never.status, never.body["expiry"]) == (201, "never")
    bobs = await call(client, gateway, "POST", path + "/renew", auth=BOB)
    assert bobs.status == 404
    await call(client, gateway, "DELETE", path, auth=ALICE)
    gone = await call(client, gateway, "POST", path + "/renew", auth=ALICE)
    assert gone.status == 404


async def test_a_revoked_token_is_not_renewed(gateway, client):
    token = await made(gateway)
    await call(
        client, gateway, "POST", "/tokens/revoke", {"ids": [token["id"]]}, auth=ALICE
    )
    answer = await call(
        client, gateway, "POST", f"/tokens/{token['id']}/renew", auth=ALICE
    )
    assert (answer.status, answer.error) == (409, "conflict")


# the CLI


def test_cli_remove_purge_renew(cli: Cli) -> None:
    ids = [create_cli_token(cli) for _ in range(3)]
    assert cli.ok("token", "remove", ids[0]) == f"removed {ids[0]}\n"
    assert cli.fails(1, "token", "show", ids[0]) == f"error: no token {ids[0]}"
    cli.ok("token", "revoke", ids[1])
    line = cli.fails(2, "token", "purge")
    assert "revoked, expired or both" in line
    dry = cli.ok("token", "purge", "--revoked", "--older-than", "1d", "--dry-run")
    assert dry == "would purge 0 tokens\n"  # revoked just now
    dry = cli.ok("token", "purge", "--revoked", "--dry-run")
    assert ids[1] in dry
    assert dry.endswith("would purge 1 token\n")
    purged = cli.json("token", "purge", "--revoked", "--expired")
    assert isinstance(purged, list)
    assert [t["id"] for t in purged] == [ids[1]]
    listed = cli.json("token", "list")
    assert isinstance(listed, list)
    assert [t["id"] for t in listed] == [ids[2]]

    value = cli.ok("token", "renew", ids[2], "-e", "7d", "-q").strip()
    assert value.startswith("pgt_")
    assert value[4:12] == ids[2]
    never = cli.json("token", "renew", ids[2], "--never")
    assert isinstance(never, dict)
    assert (never["expiry"], never["status"]) == ("never", "active")
    assert never["token"] != value


def create_cli_token(cli: Cli) -> str:
    created = cli.json("token", "create", "-u", "alice", "-e", "1d")
    assert isinstance(created, dict)
    return str(created["id"])
