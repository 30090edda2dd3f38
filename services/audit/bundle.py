"""Case bundles (issue #15): a case's events as stored, their leaves and inclusion proofs, and
a cosigned checkpoint, which an auditor outside the network verifies with the network's public
keys alone. The format is documented in ``docs/audit-bundle-format.md``.

:func:`build` reads the store (the events at the positions given, their chain links, the
tree's tiles); :func:`check` reads nothing but the bundle and the keys.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

from services.audit.merkle import ProofError, leaf_hash, verify_inclusion
from services.audit.note import (
    NoteError,
    Verifier,
    check_cosignature,
    open_checkpoint,
)
from services.audit.tree import StoredTree
from services.event_store.chain import GENESIS, link_before, link_hash
from services.event_store.tiles import TileStore, reading

__all__ = ["FORMAT", "BundleError", "BundleReport", "build", "check"]

FORMAT: Final = "cbcm-audit-bundle/v1"


class BundleError(ValueError):
    """A bundle that cannot be built, or is not one (safe to show)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(
    recorder: Any,
    positions: list[int],
    *,
    case_id: UUID,
    log_vkey: str,
    checkpoint_note: str,
    replay: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle of the events at ``positions`` against the cosigned ``checkpoint_note``.

    ``BundleError`` if the store's tree at the checkpoint's size is not the one signed (the
    store differs from the log the witnesses hold: nothing to prove)."""
    log = Verifier.parse(log_vkey)
    checkpoint, _ = open_checkpoint(checkpoint_note, log)
    with reading(recorder):  # one read transaction for every tile and link asked
        return _build(recorder, positions, case_id, log_vkey, checkpoint, checkpoint_note, replay)


def _build(  # noqa: PLR0917
    recorder: Any,
    positions: list[int],
    case_id: UUID,
    log_vkey: str,
    checkpoint: Any,
    checkpoint_note: str,
    replay: dict[str, Any] | None,
) -> dict[str, Any]:
    tree = StoredTree(recorder)
    store = TileStore(recorder)
    if checkpoint.size > tree.size or tree.root(checkpoint.size) != checkpoint.root:
        raise BundleError(
            f"the store's tree of {checkpoint.size} events is not the one the checkpoint "
            "signs: verify the store (cbcm audit verify) before exporting"
        )
    events = []
    leaves = tree.record_leaf_indexes(positions)  # the records whole, in one query
    wanted = sorted(set(positions) | set(leaves))
    indexes = {p: i for p, i in leaves.items() if i is not None}
    tree.prefetch([i for i in indexes.values() if i < checkpoint.size], checkpoint.size)
    for position in wanted:
        event = store.event_at(position)
        links = store.links_between(position, position)
        if event is None or not links:
            raise BundleError(f"position {position} holds no linked event")
        originator, version, topic, state = event
        before = link_before(recorder, position)
        previous = GENESIS if before is None else before.link
        index = indexes.get(position)
        assert index is not None
        entry: dict[str, Any] = {
            "position": position,
            "leaf_index": index,
            "originator_id": originator.hex,
            "version": version,
            "topic": topic,
            "state": _b64(state),
            "previous_link": previous.hex(),
            "link": links[0][1].hex(),
            "leaf_hash": leaf_hash(links[0][1]).hex(),
        }
        if index < checkpoint.size:
            entry["inclusion_proof"] = [_b64(h) for h in tree.inclusion(index, checkpoint.size)]
        else:
            entry["inclusion_proof"] = None  # after the checkpoint: not covered yet
        events.append(entry)
    bundle: dict[str, Any] = {
        "format": FORMAT,
        "case_id": str(case_id),
        "log": log_vkey,
        "checkpoint": checkpoint_note,
        "events": events,
    }
    if replay is not None:
        bundle["replay"] = replay
    return bundle


@dataclass
class BundleReport:
    origin: str = ""
    size: int = 0
    proven: int = 0
    uncovered: list[int] = field(default_factory=list)
    cosigners: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notices: int = 0
    """Notifications about the case (sent or given up) among the bundle's events."""
    notices_named: int | None = None
    """How many notices the case's index names, when its stored bytes are readable without
    the network's keys (no whole-event cipher); None: they are not."""

    @property
    def verified(self) -> bool:
        return not self.problems and not self.uncovered


def check(
    bundle: dict[str, Any], log_vkey: str, witnesses: list[Verifier], quorum: int
) -> BundleReport:
    """Check a bundle with the keys alone: the checkpoint's signature (the log's key and
    origin), the cosignatures the policy asks for, each event's link recomputed from its
    stored bytes, its leaf hash and its inclusion proof against the checkpoint's root."""
    report = BundleReport()
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError(f"not a {FORMAT} bundle")
    try:
        log = Verifier.parse(log_vkey)
        checkpoint, signatures = open_checkpoint(str(bundle["checkpoint"]), log)
    except (NoteError, KeyError) as e:
        report.problems.append(f"the checkpoint: {e}")
        return report
    report.origin, report.size = checkpoint.origin, checkpoint.size
    text = checkpoint.text()
    for witness in witnesses:
        for signature in signatures:
            try:
                if check_cosignature(text, signature, witness) is not None:
                    report.cosigners.append(witness.name)
                    break
            except NoteError as e:
                report.problems.append(str(e))
    if len(report.cosigners) < quorum:
        report.problems.append(
            f"cosigned by {len(report.cosigners)} of the witnesses named, {quorum} needed"
        )
    versions: dict[str, list[int]] = {}
    for event in bundle.get("events", []):
        try:
            _check_event(event, checkpoint.size, checkpoint.root, report)
            versions.setdefault(str(event["originator_id"]), []).append(int(event["version"]))
        except (KeyError, TypeError, ValueError) as e:
            report.problems.append(f"an event entry is malformed: {type(e).__name__}: {e}")
    for originator, found in versions.items():
        if sorted(found) != list(range(1, len(found) + 1)):
            report.problems.append(
                f"record {originator}: versions {sorted(found)} are not 1 to {len(found)}: "
                "an event of it is left out"
            )
    _check_notices(bundle, report)
    return report


NOTICE_TOPIC: Final = "domain.notification:Notification."
INDEX_TOPIC: Final = "domain.case_notices:CaseNotices.Indexed"


def _check_notices(bundle: dict[str, Any], report: BundleReport) -> None:
    """The notices about the case: each one the replay lists is an event of the bundle at its
    position, and, where the case's index of notices is readable (stored without the
    whole-event cipher), each notice it names is in the bundle."""
    events = [e for e in bundle.get("events", []) if isinstance(e, dict)]
    at = {e.get("position"): e for e in events}
    in_bundle = {
        str(e.get("originator_id"))
        for e in events
        if str(e.get("topic", "")).startswith(NOTICE_TOPIC)
    }
    report.notices = len(in_bundle)
    replay = bundle.get("replay")
    steps = replay.get("steps", []) if isinstance(replay, dict) else []
    for step in steps:
        if not isinstance(step, dict) or step.get("record") != "notification":
            continue
        position = (step.get("evidence") or {}).get("position")
        entry = at.get(position)
        if step.get("event") == "missing":
            report.problems.append(
                f"the replay says the notice {step.get('aggregate_id')} is missing from the log"
            )
        elif entry is None or not str(entry.get("topic", "")).startswith(NOTICE_TOPIC):
            report.problems.append(
                f"the replay lists a notice at position {position} that the bundle does not hold"
            )
    named: set[str] = set()
    for entry in events:
        if entry.get("topic") != INDEX_TOPIC:
            continue
        try:
            state = json.loads(base64.b64decode(str(entry["state"]), validate=True))
            named.update(UUID(str(n)).hex for n in state["notices"])
        except (ValueError, KeyError, TypeError):
            return  # ciphertext (the whole-event cipher): only the network can read it
    report.notices_named = len(named)
    for notice in sorted(named - in_bundle):
        report.problems.append(
            f"the case's index of notices names notice {UUID(hex=notice)}, which the bundle "
            "does not hold"
        )


def _check_event(event: dict[str, Any], size: int, root: bytes, report: BundleReport) -> None:
    position = int(event["position"])
    link = link_hash(
        bytes.fromhex(event["previous_link"]),
        position=position,
        originator_id=UUID(hex=event["originator_id"]),
        version=int(event["version"]),
        topic=str(event["topic"]),
        state=base64.b64decode(event["state"], validate=True),
    )
    if link.hex() != event["link"]:
        report.problems.append(f"position {position}: the stored bytes do not hash to the link")
        return
    leaf = leaf_hash(link)
    if leaf.hex() != event["leaf_hash"]:
        report.problems.append(f"position {position}: the leaf hash is not the link's")
        return
    proof = event.get("inclusion_proof")
    if proof is None:
        report.uncovered.append(position)
        return
    try:
        verify_inclusion(
            int(event["leaf_index"]),
            size,
            leaf,
            [base64.b64decode(h, validate=True) for h in proof],
            root,
        )
    except ProofError as e:
        report.problems.append(f"position {position}: {e}")
        return
    report.proven += 1
