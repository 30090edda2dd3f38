"""Hosts made of Linux network namespaces, for the multi-host fault test (issue #16).

``Network`` makes a switch (a bridge in a namespace of its own) and any number of hosts, each a
namespace with one veth into the switch and an address of ``10.16.<net>.0/24``; the test's own
process reaches them through one more veth from the root namespace (``.254``). Nothing is
routed anywhere else: no default route, no NAT, so traffic stays between loopback and these
namespaces. ``close`` kills every process still running in them and deletes the namespaces
and the root veth (the kernel removes a veth with its peer); it is safe to call twice, and a
finalizer calls it even when the test fails.

Requires root (``ip netns add``); the test fails (never skips) without it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace: its name, address, and what runs in it."""

    name: str
    namespace: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, log: Path) -> int:
        with log.open("ab") as out:
            return subprocess.run(
                self.command(argv),
                check=False,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=180,
            ).returncode

    def pids(self) -> list[int]:
        found = ip("netns", "pids", self.namespace, check=False).stdout.split()
        return [int(p) for p in found if p.isdigit()]


class Network:
    """A switch and hosts on ``10.16.<net>.0/24`` (``net`` drawn at random, so that two runs
    at once do not meet: each has its own namespaces anyway)."""

    def __init__(self, names: Sequence[str]) -> None:
        if os.geteuid() != 0:
            raise AssertionError("the multi-host test makes network namespaces: run it as root")
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.tag = tag
        self.net = random.randrange(1, 250)
        self.switch = f"cbcm16-{tag}-sw"
        self.root_veth = f"c16r{tag}"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        try:
            self._make(names)
        except BaseException:
            self.close()
            raise

    def address(self, number: int) -> str:
        return f"10.16.{self.net}.{number}"

    @property
    def client_address(self) -> str:
        """The test process's own address on the switch."""
        return self.address(254)

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _make(self, names: Sequence[str]) -> None:
        self._netns(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for number, name in enumerate(names, start=1):
            namespace = f"cbcm16-{self.tag}-{name}"
            self._netns(namespace)
            inside, outside = "eth0", f"p{number}"
            ip("link", "add", f"c16h{self.tag}", "type", "veth", "peer", "name", f"c16s{self.tag}")
            ip("link", "set", f"c16h{self.tag}", "netns", namespace)
            ip("link", "set", f"c16s{self.tag}", "netns", self.switch)
            ip("-n", namespace, "link", "set", f"c16h{self.tag}", "name", inside)
            ip("-n", self.switch, "link", "set", f"c16s{self.tag}", "name", outside)
            ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
            address = self.address(number)
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", namespace, "link", "set", inside, "up")
            self.hosts[name] = Host(name, namespace, address)
        # the test's own veth, from the root namespace into the switch
        ip("link", "add", self.root_veth, "type", "veth", "peer", "name", f"c16t{self.tag}")
        ip("link", "set", f"c16t{self.tag}", "netns", self.switch)
        ip("-n", self.switch, "link", "set", f"c16t{self.tag}", "name", "test")
        ip("-n", self.switch, "link", "set", "test", "master", "br0", "up")
        ip("addr", "add", f"{self.client_address}/24", "dev", self.root_veth)
        ip("link", "set", self.root_veth, "up")

    def close(self) -> None:
        """Kill what still runs in the hosts, then delete the namespaces and the root veth."""
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    with contextlib.suppress(OSError):
                        process.kill()
            for pid in host.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(h.pids() for h in self.hosts.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        ip("link", "del", self.root_veth, check=False)
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        self._made.clear()
