"""What witnesses vouch for (issue #15): checkpoints read from their books, held to a policy.

A policy names the witnesses whose cosignatures count (their cosigner vkeys) and how many of
them must cosign a tree head (the quorum). Every book's tree heads are re-checked: the log's
signature with the network's key and origin, each cosignature with the witness's key. Books
are merged by tree size: two books holding different roots for one size are a split view,
itself a finding. With no witness named (quorum 0) the network's signature alone counts, and
verify says so.

The chain checkpoints of the store (the link at a position, issue #5) are read too: they name
damage at the exact position. They never make a store pass on their own when a policy names
witnesses: only cosigned tree heads do.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from services.audit.checkpoints import verify_checkpoint
from services.audit.keys import LogIdentity
from services.audit.note import (
    NoteError,
    Signature,
    Verifier,
    check_cosignature,
    format_note,
    open_checkpoint,
)
from services.audit.verify import Attested, TreeAttested
from services.audit.witness import WitnessBook

__all__ = ["Evidence", "EvidenceError", "gather"]


class EvidenceError(ValueError):
    """A book that cannot vouch for anything (a signature that does not verify)."""


@dataclass
class Evidence:
    log: LogIdentity
    witnesses: list[Verifier]
    quorum: int
    tree_heads: list[TreeAttested] = field(default_factory=list)
    """The heads that pass the policy, smallest first."""
    notes: dict[int, str] = field(default_factory=dict)
    """Each passing head's checkpoint note with the log's signature and every valid
    cosignature found, by tree size."""
    checkpoints: list[Attested] = field(default_factory=list)
    other_stores: list[str] = field(default_factory=list)
    """Stores the books hold chain checkpoints of, none of this store's."""
    split_views: list[str] = field(default_factory=list)
    alarms: int = 0
    """Alarms the books recorded (forks, moved-back heads, contradictions)."""
    below_quorum: int = 0
    """Tree heads the log signed that too few of the policy's witnesses cosigned."""

    def vouched(self) -> dict[str, int]:
        """Each cosigner and the largest tree size it vouched for."""
        largest: dict[str, int] = {}
        for head in self.tree_heads:
            for name in head.cosigners:
                largest[name] = max(largest.get(name, 0), head.size)
        return largest

    def latest_note(self) -> str | None:
        return self.notes[max(self.notes)] if self.notes else None


def gather(
    books: Iterable[Path],
    log: LogIdentity,
    witnesses: list[Verifier],
    quorum: int,
    store: str | None,
    *,
    published: Iterable[str] = (),
) -> Evidence:
    """What the books (and the cosigned notes ``published`` on NATS) vouch for under the
    policy. A book holding something that does not verify cannot vouch for anything
    (``EvidenceError``); a published note that does not verify is ignored (anyone allowed
    to publish there could publish junk)."""
    evidence = Evidence(log, witnesses, quorum)
    heads: dict[int, tuple[bytes, str, list[Signature], int | None]] = {}
    _published_heads(published, log, evidence, heads)
    chain: dict[int, Attested] = {}
    others: set[str] = set()
    for path in books:
        if not Path(path).is_file():
            continue
        with WitnessBook.open(path, readonly=True) as book:
            held = book.tree_heads(log.origin)
            legacy = book.checkpoints(store) if store else []
            others.update(s for s in book.stores() if s != store)
            evidence.alarms += sum(1 for a in book.alarms() if a["kind"] != "unprovable")
        for head in held:
            try:
                checkpoint, signatures = open_checkpoint(head.note, log.verifier)
            except NoteError as e:
                raise EvidenceError(f"the book {path} holds a tree head that {e}") from e
            text = checkpoint.text()
            if checkpoint.size in heads and heads[checkpoint.size][0] != checkpoint.root:
                evidence.split_views.append(
                    f"two roots for the tree of {checkpoint.size} events (one in {path})"
                )
                continue
            previous = heads.get(checkpoint.size)
            merged = [*(previous[2] if previous else []), *signatures]
            held_at = head.position if previous is None or previous[3] is None else previous[3]
            heads[checkpoint.size] = (checkpoint.root, text, merged, held_at)
        for cp in legacy:
            if not verify_checkpoint(log.public_key, cp):
                raise EvidenceError(
                    f"the book {path} holds a checkpoint whose signature does not verify "
                    f"(position {cp.position}): it cannot vouch for anything"
                )
            chain[cp.position] = Attested(
                cp.position, bytes.fromhex(cp.link), cp.signed_at.isoformat()
            )
    evidence.checkpoints = [chain[p] for p in sorted(chain)]
    if store is not None and not evidence.checkpoints:
        evidence.other_stores = sorted(others)
    for size in sorted(heads):
        root, text, signatures, position = heads[size]
        cosigners: list[str] = []
        kept: dict[tuple[str, int], Signature] = {}
        for signature in signatures:
            if signature.name == log.origin:
                kept.setdefault((signature.name, signature.key_id), signature)
                continue
            for witness in witnesses:
                try:
                    if check_cosignature(text, signature, witness) is not None:
                        if witness.name not in cosigners:
                            cosigners.append(witness.name)
                        kept.setdefault((signature.name, signature.key_id), signature)
                except NoteError as e:
                    raise EvidenceError(f"tree of {size} events: {e}") from e
        if len(cosigners) < quorum:
            evidence.below_quorum += 1
            continue
        evidence.tree_heads.append(TreeAttested(size, root, tuple(cosigners), position))
        evidence.notes[size] = format_note(text, list(kept.values()))
    return evidence


def _published_heads(
    published: Iterable[str],
    log: LogIdentity,
    evidence: Evidence,
    heads: dict[int, tuple[bytes, str, list[Signature], int | None]],
) -> None:
    """The tree heads of the cosigned notes published on NATS, merged by size."""
    for note in published:
        try:
            checkpoint, signatures = open_checkpoint(note, log.verifier)
        except NoteError:
            continue
        if checkpoint.size in heads and heads[checkpoint.size][0] != checkpoint.root:
            evidence.split_views.append(
                f"two roots for the tree of {checkpoint.size} events (one published on NATS)"
            )
            continue
        previous = heads.get(checkpoint.size)
        merged = [*(previous[2] if previous else []), *signatures]
        heads[checkpoint.size] = (checkpoint.root, checkpoint.text(), merged, None)


def root_b64(root: bytes) -> str:
    return base64.b64encode(root).decode()
