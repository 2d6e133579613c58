"""Observations: operators H (differentiable, in torch), synthetic observations, the obs contract."""
