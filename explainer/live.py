"""The bridges this web process runs itself (embedded mode: in-memory channel layer)."""
from __future__ import annotations

import functools

from explainer.bridge import Bridge, EmbeddedBridges, channel_sender
from explainer.services import sandboxes


def make_bridge(sandbox_id: str) -> Bridge:
    def admin_url() -> str:
        return sandboxes.get_sandbox(sandbox_id).admin_url

    return Bridge(sandbox_id, admin_url, channel_sender(sandbox_id),
                  parts=lambda: sandboxes.parts_of(sandbox_id))


@functools.lru_cache(maxsize=1)
def bridges() -> EmbeddedBridges:
    return EmbeddedBridges(make_bridge)
