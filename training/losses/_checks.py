"""Argument checks shared by the loss modules (ValueError with the offending value)."""

from __future__ import annotations

import math

import torch


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_finite(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_positive_int(name: str, value: int, maximum: int | None = None) -> None:
    # bool is an int subclass; True is never a sensible size.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")


def check_pair(a: torch.Tensor, b: torch.Tensor, names: str = "features") -> None:
    """Both (batch, dim), same shape, non-empty: rows of `a` and `b` are paired."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{names} must be 2-D (batch, dim), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{names} are empty: the batch needs at least one pair")
