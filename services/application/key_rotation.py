"""Rotation of the key-encryption key: a new KEK wraps every data key, events stay as they are.

``rotate``: a local ring gets a new active KEK (a KMS rotates its own and this rewraps to its
active version); every live data key is unwrapped and wrapped again under the active KEK. The
old KEK can then be retired (destroyed): from then on, copies of the data-key table in old
backups cannot be unwrapped either.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.application.mechanism import ComplaintMechanism
from services.event_store.personal_data.kek import KeyRingError, LocalKeyRing


@dataclass(frozen=True)
class Rotation:
    active: str
    rewrapped: int


def _keys(app: ComplaintMechanism):  # type: ignore[no-untyped-def]
    if app.data_keys is None:
        raise KeyRingError("this store keeps no personal data at rest")
    return app.data_keys


def rotate(app: ComplaintMechanism, *, new_key: bool = True) -> Rotation:
    """Make a new KEK active (local ring; ``new_key=False`` only rewraps) and rewrap every
    live data key under the active one."""
    keys = _keys(app)
    if new_key and isinstance(keys.kek, LocalKeyRing):
        keys.kek.rotate()
    return Rotation(active=keys.kek.active_id, rewrapped=keys.rewrap_all())


def retire(
    app: ComplaintMechanism,
    kek_id: str,
    *,
    after_seconds: float = LocalKeyRing.RETIRE_AFTER_SECONDS,
) -> None:
    """Destroy a KEK of the local ring, once no live data key is wrapped under it and the
    rotation is ``after_seconds`` old."""
    keys = _keys(app)
    if not isinstance(keys.kek, LocalKeyRing):
        raise KeyRingError("KEKs of a KMS are retired in the KMS")
    still = keys.table.counts().get(kek_id, 0)
    if still:
        raise KeyRingError(
            f"{still} data key(s) are still wrapped under {kek_id!r}: run `cbcm keys rotate` first"
        )
    keys.kek.retire(kek_id, after_seconds=after_seconds)


def status(app: ComplaintMechanism) -> dict[str, int]:
    """Live data keys per KEK id, and erased ones under ``"erased"``."""
    counts = _keys(app).table.counts()
    erased = counts.pop("", 0)
    return {**counts, "erased": erased}
