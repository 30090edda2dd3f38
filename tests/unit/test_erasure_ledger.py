"""The erasure ledger beside the keys (ADR 23): what it holds counts only under the writer
key and for its store; an edited line costs that line alone."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from services.event_store.custody import WriterKey
from services.event_store.personal_data.erasure_ledger import ErasureLedger, LedgerEntry

KEY = WriterKey(b"k" * 32)


def entries(count: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(i, UUID(int=i), "survivor", 2, bytes([i]) * 32) for i in range(1, count + 1)
    ]


def test_what_was_appended_is_read_back_once_by_another_process(tmp_path: Path) -> None:
    # given a ledger two processes append the same erasures to
    path = tmp_path / "erasures-s1.ledger"
    assert ErasureLedger(path, KEY, "s1").append(entries(3)) == 3
    assert ErasureLedger(path, KEY, "s1").append(entries(4)) == 1

    # then a third reads each once, erasing every generation up to the one recorded
    ledger = ErasureLedger(path, KEY, "s1").load()
    assert len(ledger.entries) == 4 and not ledger.damaged
    assert ledger.erases(UUID(int=3), "survivor", 2)
    assert not ledger.erases(UUID(int=3), "survivor", 3)  # data recorded after the erasure


def test_an_edited_line_counts_for_nothing_and_costs_no_other(tmp_path: Path) -> None:
    # given a ledger of five erasures whose second line someone edited (its generation)
    path = tmp_path / "erasures-s1.ledger"
    ErasureLedger(path, KEY, "s1").append(entries(5))
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"through":2', '"through":9')
    path.write_text("\n".join(lines) + "\n")

    # then the edited line is named and erases nothing more, the others still count
    ledger = ErasureLedger(path, KEY, "s1").load()
    assert [e.position for e in ledger.entries] == [1, 3, 4, 5]
    assert len(ledger.damaged) == 1 and "line 2" in ledger.damaged[0]
    assert not ledger.erases(UUID(int=2), "survivor", 3)


def test_a_ledger_of_another_store_or_key_counts_for_nothing(tmp_path: Path) -> None:
    # given a ledger written for store s1
    path = tmp_path / "erasures-s1.ledger"
    ErasureLedger(path, KEY, "s1").append(entries(2))

    # then read for another store, or under another writer key, it erases nothing
    for ledger in (
        ErasureLedger(path, KEY, "s2").load(),
        ErasureLedger(path, WriterKey(b"z" * 32), "s1").load(),
    ):
        assert ledger.entries == []
        assert not ledger.erases(UUID(int=1), "survivor", 1)
