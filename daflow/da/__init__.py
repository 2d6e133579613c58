"""Data assimilation: one filter interface (daflow.da.base), the classical filters, cycling.

``FILTERS`` maps ``daflow assimilate --method`` names to ``"module:Class"``; adding a method is
adding one file and one line here.
"""
from __future__ import annotations

from daflow.registry import load

FILTERS: dict[str, str] = {
    "oi": "daflow.da.oi:OptimalInterpolation",
    "enkf": "daflow.da.enkf:StochasticEnKF",
    "etkf": "daflow.da.etkf:ETKF",
    "letkf": "daflow.da.letkf:LETKF",
    "ensf": "daflow.da.ensf:EnSF",
    "enkf-n": "daflow.da.enkf_n:EnKFN",
    "3dvar": "daflow.da.var3d:Var3D",
    "4dvar": "daflow.da.var4d:Var4D",
}

GENERATIVE = {"storm": "daflow.nn.generative:assimilate"}  # posterior sampling with a trained generative model
METHODS = [*FILTERS, *GENERATIVE]


def filter_class(name: str):
    return load(FILTERS, name, "method")
