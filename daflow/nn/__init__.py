"""The generative engine (STORM-like): linear-cost attention, the spatio-temporal diffusion
transformer, the EDM diffusion schedule, training, sampling and posterior sampling."""
