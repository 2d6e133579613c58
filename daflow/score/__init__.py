"""Verification: RMSE, bias, spread, CRPS, rank histograms, anomaly correlation, spectra."""
from daflow.core.verbs import callable_package

callable_package(__name__, "score")  # daflow.score(...) is the API verb even once this package is imported
