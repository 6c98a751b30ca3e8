"""Measuring models: metrics and calibration, the COVID-CT-MD and held-out evaluations, CAM and lesion checks, the benchmark."""
