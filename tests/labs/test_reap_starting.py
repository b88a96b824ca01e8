"""The idle reaper leaves a sandbox that another request is starting right now (found by
./lab cohort: a learner's lab run reaped a neighbour's sandbox mid-start)."""
from __future__ import annotations

import time

from labs.sandbox.service import Sandbox, SandboxService
from labs.services import sandboxes


def record(service: SandboxService, sandbox_id: str, created_at: float) -> None:
    service.dir.mkdir(parents=True, exist_ok=True)
    service._write(Sandbox(id=sandbox_id, host="127.0.0.1", proxy_url="", admin_url="",
                           backends={"b1": ""}, ports={}, status="starting",
                           created_at=created_at, last_used=created_at))


def test_a_sandbox_being_started_is_not_reaped_but_a_stuck_one_is(tmp_path):
    service = SandboxService(tmp_path)
    record(service, "lab-starting", time.time())
    record(service, "lab-stuck", time.time() - sandboxes.STARTING_GRACE_S - 5)
    assert sandboxes.reap(override=str(tmp_path)) == ["lab-stuck"]
    assert [sb.id for sb in service.list()] == ["lab-starting"]
    assert sandboxes.reap(everything=True, override=str(tmp_path)) == ["lab-starting"]
