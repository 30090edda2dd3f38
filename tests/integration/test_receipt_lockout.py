"""An attacker who saw the visible part of a survivor's code hammers its look-ups, through
the JSON API and the follow-up page at once, from many addresses, concurrently (issue #20).
Before #20, five wrong look-ups refused the real owner for 15 minutes (429); now the owner's
look-up is answered 200, held at most the slow-down's ceiling, while the attack goes on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.application.receipts import ALPHABET
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world

LOOK_UP = "/v1/public/receipt-lookups"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    yield make_world(tmp_path, mechanism, receipt_slowdown_max_seconds=1.0)
    mechanism.close()


def client(world: World, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=world.api, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://cbcm.test")


async def page_guess(world: World, address: str, code: str) -> int:
    async with client(world, address) as browser:
        form = (await browser.get("/follow-up")).text
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
        answer = await browser.post("/follow-up", data={**fields, "code": code})
        return answer.status_code


async def api_guess(world: World, address: str, code: str) -> int:
    async with client(world, address) as api:
        return (await api.post(LOOK_UP, json={"code": code})).status_code


async def test_an_attack_on_the_locator_cannot_keep_the_owner_out(world: World) -> None:
    # given a receipt, and its locator known to the attacker
    async with client(world, "192.0.2.1") as owner:
        sent = await owner.post("/v1/public/complaints", json={"agency": "unhcr", "narrative": "x"})
        code = sent.json()["receipt_code"]
    wrong = [code[:-1] + symbol for symbol in ALPHABET if symbol != code[-1]]
    # when 16 addresses guess at it, through the API and the page, 60 guesses in all, and the
    # owner looks it up in the middle of the attack
    attack = [
        (api_guess if n % 2 else page_guess)(world, f"198.51.100.{n % 16}", wrong[n % 31])
        for n in range(60)
    ]
    first_wave = asyncio.gather(*attack[:30])
    await asyncio.sleep(0)
    results = list(await first_wave)
    owner_answer, *more = await asyncio.gather(api_guess(world, "192.0.2.1", code), *attack[30:])
    results += more
    # then the attack got nowhere (404, or refused once a client is out of failures), and
    # the owner got in (held at most the slow-down's ceiling: tests/unit/test_receipt_guessing)
    assert set(results) <= {404, 429}
    assert results.count(404) >= 30
    assert owner_answer == 200
    # and the locator's failures held the owner's look-up rather than refusing it
    assert world.api.state.receipts.failures.failures(code.replace("-", "")[:8]) >= 30


async def test_one_client_has_at_most_two_look_ups_in_flight(world: World) -> None:
    # given a receipt slowed down by its failures (5 free, from other addresses)
    async with client(world, "192.0.2.1") as owner:
        sent = await owner.post("/v1/public/complaints", json={"agency": "unhcr", "narrative": "x"})
        code = sent.json()["receipt_code"]
    wrong = [code[:-1] + symbol for symbol in ALPHABET if symbol != code[-1]]
    for n in range(6):
        assert await api_guess(world, f"198.51.100.{n}", wrong[n]) == 404
    # when one client sends 6 guesses at once, each held before it is verified
    results = await asyncio.gather(
        *(api_guess(world, "203.0.113.50", wrong[10 + n]) for n in range(6))
    )
    # then only 2 are verified (404); the others are refused at once (429), not queued
    assert sorted(results) == [404, 404, 429, 429, 429, 429]
