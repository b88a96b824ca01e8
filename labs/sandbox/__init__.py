"""Sandboxes: one proxy plus its toy backends on their own ports, with an id.

Plain Python (no Django): used by the launcher (``manage.py lab``), by the site, and by
tests alike. See service.py for the theory of operation.
"""
from labs.sandbox.service import (
    PortInUse,
    Sandbox,
    SandboxError,
    SandboxExists,
    SandboxLimit,
    SandboxNotFound,
    SandboxService,
    SandboxStartError,
    default_state_dir,
)

__all__ = [
    "PortInUse", "Sandbox", "SandboxError", "SandboxExists", "SandboxLimit", "SandboxNotFound",
    "SandboxService", "SandboxStartError", "default_state_dir",
]
