"""The heartbeat's backup inventory: gathered again only on change, hashing only what changed."""

from __future__ import annotations

from typing import Any

import pytest
from agent_backup_tree import put

from balctl import backup_inventory
from balctl.backup_inventory import Inventory
from balctl.backup_manifest import digest
from balctl.paths import HostPaths


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the files actually read and hashed."""
    seen: list[int] = []
    real = backup_inventory.hash_file

    def counting(handle: Any, st: Any) -> str:
        seen.append(st.st_size)
        return real(handle, st)

    monkeypatch.setattr(backup_inventory, "hash_file", counting)
    return seen


def _host(paths: HostPaths) -> None:
    root = paths.root
    put(paths, "/etc/haproxy/haproxy.cfg", f"frontend fe\n    bind :443 ssl crt {root}/etc/ssl/e\n")
    put(paths, "/etc/ssl/e/a.pem", "A" * 10)
    put(paths, "/etc/haproxy/certs/b.pem", "B" * 20)


def test_only_changed_files_are_hashed_and_sent(agent_root: HostPaths, hashed: list[int]) -> None:
    _host(agent_root)
    inventory = Inventory(agent_root)

    first = inventory.due(100.0)
    assert first is not None and first["ufw"] is False
    assert first["digest"] == digest(first["files"])
    assert sorted(hashed) == sorted([10, 20, agent_root.haproxy_cfg.stat().st_size])
    hashed.clear()
    assert inventory.due(105.0) is None
    assert hashed == []

    put(agent_root, "/etc/ssl/e/new.pem", "N" * 30)  # a new file in a referenced crt folder
    second = inventory.due(110.0)
    assert second is not None
    assert "/etc/ssl/e/new.pem" in [f["path"] for f in second["files"]]
    assert hashed == [30]

    assert inventory.due(115.0) is None
    inventory.lost()
    assert inventory.due(116.0) == second
    assert inventory.due(116.0 + backup_inventory.RESEND_EVERY_S) == second


def test_the_list_is_truncated_but_the_digest_covers_everything(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(agent_root)
    monkeypatch.setattr(backup_inventory, "MAX_REPORTED", 2)
    block = Inventory(agent_root).due(1.0)
    assert block is not None
    assert len(block["files"]) == 2 and block["truncated"] is True
    assert block["digest"] != digest(block["files"])


def test_a_scope_past_its_bounds_is_left_out_and_not_walked_every_beat(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(agent_root)
    monkeypatch.setattr("balctl.backup_scope.MAX_ENTRIES", 1)
    calls: list[float] = []
    real = backup_inventory.gather

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(backup_inventory, "gather", counted)
    inventory = Inventory(agent_root)
    assert inventory.due(1.0) is None
    assert inventory.due(6.0) is None
    assert len(calls) == 1
    monkeypatch.setattr("balctl.backup_scope.MAX_ENTRIES", 100)
    assert inventory.due(1.0 + backup_inventory.RESEND_EVERY_S) is not None
