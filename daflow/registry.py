"""Registries of "module:Class" strings, imported only when used (the CLI stays quick to start)."""
from __future__ import annotations

import importlib


def load(entries: dict[str, str], name: str, kind: str):
    """The object registered as ``name``; ValueError naming the choices when unknown."""
    try:
        module, attribute = entries[name].split(":")
    except KeyError:
        raise ValueError(f"unknown {kind} {str(name)!r}; choose from {', '.join(entries)}") from None
    return getattr(importlib.import_module(module), attribute)
