"""Sweeps: the launcher contract, local and Ray launchers, tuning, retrain, imported predictions."""
