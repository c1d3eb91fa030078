"""Evaluations and safe rollout: datasets, scorers, evaluation runs and their verdicts, the promotion gate.

A room above ``flows/`` and ``models/``: it runs prompts through the gateway and compares runs by their
stored results. ``cli/`` and ``server/`` use it; nothing below imports it.
"""
