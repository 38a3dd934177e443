"""Experiments: one entry point per study (``python -m experiments.<name>``)."""
