"""One stack file from several compose files, for ``docker stack deploy``.

Docker 20.10's ``docker stack deploy -c a.yml -c b.yml`` appends lists where compose
replaces them (an override's ``command`` is added after the base's, giving one long
command), it ignores ``network_mode`` and refuses ``group_add``. So the files are merged
here the way compose merges them (mappings key by key, anything else replaced by the later
file; YAML anchors resolved), ``network_mode`` and ``group_add`` are dropped (a Swarm
override gives ``networks``, and a ``user`` with the group), and the result is one file:

    python docker/stackfile.py compose.yml compose.hostnet.yml compose.swarm.yml > stack.yml
    docker stack deploy -c stack.yml lblab
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


def merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return override


def stack(paths: list[str | Path]) -> dict:
    merged: dict = {}
    for path in paths:
        merged = merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    merged = {k: v for k, v in merged.items() if not k.startswith("x-")}
    for service in (merged.get("services") or {}).values():
        service.pop("network_mode", None)
        service.pop("group_add", None)
    return merged


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # write shared parts out in full: easier to read
        return True


def dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False)


if __name__ == "__main__":
    sys.stdout.write(dump(stack(sys.argv[1:])))
