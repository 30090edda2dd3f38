"""Files beside the keys (``services.event_store.beside_keys``), attacked as an attack
review did: the services' user, who owns the keys directory, plants a link where the key
ceremony (run as root) will write. Root must neither follow it nor give away, truncate or
write what it points at. The ceremony runs as root, and so does CI: these tests assert it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.event_store.beside_keys import open_beside_keys
from services.event_store.custody import WriterKey
from services.event_store.high_water import HighWater, raise_high_water

SERVICES_UID = 54321


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    assert os.geteuid() == 0, "the key ceremony runs as root: run this suite as root (CI does)"
    folder = tmp_path / "keys"
    folder.mkdir()
    os.chown(folder, SERVICES_UID, SERVICES_UID)  # StateDirectory=, the services' user
    return folder


def _root_file(tmp_path: Path) -> Path:
    victim = tmp_path / "shadow"  # stands for /etc/shadow, root's
    victim.write_text("root:secret\n")
    os.chmod(victim, 0o600)
    return victim


def test_root_follows_no_planted_link_when_it_raises_the_high_water_mark(
    tmp_path: Path, keys: Path
) -> None:
    victim = _root_file(tmp_path)
    (keys / "high-water-s1.json.lock").symlink_to(victim)
    with pytest.raises(OSError):
        raise_high_water(
            keys / "high-water-s1.json", WriterKey(b"k" * 32), "s1", HighWater(1, b"\0" * 32)
        )
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0) and victim.read_text() == "root:secret\n"


@pytest.mark.parametrize(
    "flags",
    [
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        os.O_RDWR | os.O_CREAT,
    ],
)
def test_a_link_beside_the_keys_is_never_followed_nor_its_target_given_away(
    tmp_path: Path, keys: Path, flags: int
) -> None:
    victim = _root_file(tmp_path)
    (keys / "erasures-s.ledger").symlink_to(victim)
    with pytest.raises(OSError):
        os.close(open_beside_keys(keys / "erasures-s.ledger", flags))
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0) and victim.read_text() == "root:secret\n"


def test_a_second_name_of_roots_file_is_neither_truncated_nor_given_away(
    tmp_path: Path, keys: Path
) -> None:
    victim = _root_file(tmp_path)
    os.link(victim, keys / "erasures-s.ledger")  # where hard links to it can be made
    with pytest.raises(OSError):
        os.close(open_beside_keys(keys / "erasures-s.ledger", os.O_WRONLY | os.O_TRUNC))
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0) and victim.read_text() == "root:secret\n"


def test_a_file_root_makes_beside_the_keys_is_the_services(keys: Path) -> None:
    fd = open_beside_keys(keys / "erasures-s.ledger", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"line\n")
    finally:
        os.close(fd)
    st = os.stat(keys / "erasures-s.ledger")
    assert (st.st_uid, st.st_gid) == (SERVICES_UID, SERVICES_UID)
    assert (keys / "erasures-s.ledger").read_bytes() == b"line\n"
