"""Backend health: active checks, passive outlier detection, and the lifecycle table.

`HealthManager(server)` is what the proxy runs; `proxy.health.table` is the
transition table the checkers follow and the site draws (`as_mermaid()`).
"""
from proxy.health.manager import HealthManager
from proxy.health.table import TABLE, as_mermaid

__all__ = ["HealthManager", "TABLE", "as_mermaid"]
