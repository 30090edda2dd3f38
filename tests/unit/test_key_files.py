"""Key files made on first use appear whole or not at all (attack review of ADR 34: the
children ``cbcm serve`` forks start at once). Before, a key file was created in place and
written after: a process starting beside the one making it read it empty, refused its
configuration (exit 2), and that stopped the whole stack."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.audit.keys import ORIGIN_FILE, ORIGIN_PREFIX, load_log_origin
from services.event_store import config
from services.event_store.custody import load_writer_key
from services.settings import Settings


def _writer_key(path: Path) -> bytes:
    return load_writer_key(path, create=True).secret


def _event_cipher_key(path: Path) -> bytes:
    return config._event_cipher_key(Settings(data_dir=path.parent.parent)).encode()


def _log_origin(path: Path) -> bytes:
    return load_log_origin(Settings(data_dir=path.parent.parent)).encode()


@pytest.mark.parametrize(
    ("load", "name", "size"),
    [
        (_writer_key, "writer.key", 32),  # the key's bytes
        (_event_cipher_key, "event-cipher.key", 44),  # 32 bytes in base64
        (_log_origin, ORIGIN_FILE, len(ORIGIN_PREFIX) + 24),  # 15 random bytes in base32
    ],
)
def test_a_process_starting_while_another_makes_the_key_reads_a_whole_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    load: Callable[[Path], bytes],
    name: str,
    size: int,
) -> None:
    path = tmp_path / "keys" / name
    opened, read = threading.Event(), threading.Event()
    real_open = os.open
    first: list[int] = []

    def open_and_pause(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(file, flags, *args, **kwargs)
        if flags & os.O_CREAT and not first:
            first.append(fd)
            opened.set()
            read.wait(10)  # the first maker pauses right after creating its file
        return fd

    monkeypatch.setattr(os, "open", open_and_pause)
    keys: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def make(who: str) -> None:
        try:
            keys[who] = load(path)
        except BaseException as e:
            errors.append(e)
        finally:
            if who == "second":
                read.set()

    # given one process making the key, paused just after creating its file
    maker = threading.Thread(target=make, args=("first",))
    maker.start()
    assert opened.wait(10)
    # when another starts meanwhile
    make("second")
    maker.join(20)
    # then neither fails, and both hold the same whole key
    assert errors == []
    assert keys["first"] == keys["second"]
    assert len(keys["first"]) == size
