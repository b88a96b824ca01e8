"""The catalog: every folder under labs/catalog/ is a lab (see definition.py).

Adding a lab means adding a folder; ``problems()`` is what the Django system check
(labs/checks.py, id labs.E001) reports for a folder whose definition is incomplete, and
such a lab is left out of ``all_labs()`` so one broken folder cannot take the site down.
Results are cached per process; ``reload()`` forgets them (tests, the check).
"""
from __future__ import annotations

import threading
from pathlib import Path

from labs.framework.definition import CATALOG, Lab, load

_lock = threading.Lock()
_cache: dict[str, tuple[Lab | None, list[str]]] | None = None
# Labs loaded one by one (``get`` before anything needed the whole catalog): a graded run's
# command needs one lab, and loading all of them costs it a tenth of a CPU-second.
_single: dict[str, tuple[Lab | None, list[str]]] = {}


class UnknownLab(LookupError):
    pass


def _folders(root: Path = CATALOG) -> list[Path]:
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")) and p.name != "__pycache__")


def _load_all() -> dict[str, tuple[Lab | None, list[str]]]:
    global _cache
    with _lock:
        if _cache is None:
            _cache = {folder.name: _single.get(folder.name) or load(folder)
                      for folder in _folders()}
        return _cache


def _load_one(slug: str) -> tuple[Lab | None, list[str]] | None:
    with _lock:
        if _cache is not None:
            return _cache.get(slug)
        if slug not in _single:
            folder = CATALOG / slug
            if folder not in _folders():  # also refuses "../x" and other non-folder names
                return None
            _single[slug] = load(folder)
        return _single[slug]


def reload() -> None:
    global _cache
    with _lock:
        _cache = None
        _single.clear()


def problems() -> dict[str, list[str]]:
    """slug -> problems, for every folder that has any."""
    return {slug: probs for slug, (_, probs) in _load_all().items() if probs}


def all_labs() -> list[Lab]:
    labs = [lab for lab, _ in _load_all().values() if lab is not None]
    return sorted(labs, key=lambda lab: (lab.spec.order, lab.slug))


def get(slug: str) -> Lab:
    entry = _load_one(slug)
    if entry is None:
        known = ", ".join(lab.slug for lab in all_labs())
        raise UnknownLab(f"no lab {slug!r}; labs: {known}")
    lab, probs = entry
    if lab is None:
        raise UnknownLab(f"lab {slug!r} is incomplete: " + "; ".join(probs))
    return lab
