"""Verification: RMSE, bias, spread, CRPS, rank histograms, anomaly correlation, spectra."""
