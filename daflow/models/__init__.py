"""Model registry: ``daflow forecast --model NAME`` and state files name models by these keys.

Entries are ``"module:Class"`` strings imported on first use, so that listing the models does not
import every model's dependencies. Adding a model is adding one line here and one file.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daflow.registry import load

if TYPE_CHECKING:
    from daflow.models.base import Model

MODELS: dict[str, str] = {
    "lorenz63": "daflow.models.lorenz:Lorenz63",
    "lorenz96": "daflow.models.lorenz:Lorenz96",
    "sqg": "daflow.models.sqg:SQG",
}
GENERATIVE_MODEL = "storm"  # the trained generative model: forecast --model storm --checkpoint DIR (daflow.nn.generative)
MODEL_NAMES = [*MODELS, GENERATIVE_MODEL]  # what --model takes; importing this module imports no torch (daflow --help stays quick)


def __getattr__(name: str) -> Any:
    """``Model`` and ``params_from_attrs`` from :mod:`daflow.models.base`, imported (with torch) on first use."""
    if name in ("Model", "params_from_attrs"):
        from daflow.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_class(name: str) -> type[Model]:
    """The class registered under ``name``; ValueError naming the choices when unknown."""
    return load(MODELS, name, "model")


def get_model(name: str, **params) -> Model:
    """An instance of model ``name`` with ``params`` (plus ``dtype``/``device``) as keyword arguments."""
    return model_class(name)(**params)


def model_from_attrs(attrs: dict, **options) -> tuple[Model, float]:
    """(model, dt) rebuilt from a state file's global attributes (:meth:`Model.attrs`).

    KeyError when the attributes are absent, ValueError when the model name is unknown.
    """
    from daflow.models.base import params_from_attrs

    name, params, dt = params_from_attrs(attrs)
    return get_model(name, **params, **options), dt
