"""Subpackages that share their name with an API verb (``daflow.score``, ``daflow.causal``).

Importing ``daflow.score.verify`` binds the package ``daflow.score`` as an attribute of ``daflow``,
where the API function of the same name is expected. Such a package makes itself callable with
:func:`callable_package`, so ``daflow.score(...)`` is the verb whether or not the package has been
imported, and ``daflow.score.verify`` stays the module.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _VerbPackage(types.ModuleType):
    __verb__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("daflow.api"), self.__verb__)(*args, **kwargs)


def callable_package(name: str, verb: str) -> None:
    """Make the package module ``name`` callable as ``daflow.api.<verb>``."""
    module = sys.modules[name]
    module.__class__ = _VerbPackage
    module.__verb__ = verb  # type: ignore[attr-defined]
