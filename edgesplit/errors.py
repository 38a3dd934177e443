"""Exceptions of the edgesplit library. All derive from ``ValueError`` so callers may catch that."""

from __future__ import annotations


class EdgeSplitError(ValueError):
    """Base class: bad input that the user can fix. The message names the field."""


class ProfileError(EdgeSplitError):
    """A layer profile is missing, malformed or inconsistent."""


class ScenarioError(EdgeSplitError):
    """A scenario (devices, server, batch size, model) is malformed or out of range."""


class InfeasibleError(EdgeSplitError):
    """No cut fits a device's memory, or a requested plan violates a constraint."""
