"""Byte sizes as Circus prints them."""

from __future__ import annotations


def human_bytes(value: float) -> str:
    """Circus's short sizes: 3M, 512K, 1.2G."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{unit}" if scaled < 10 and unit != "K" else f"{scaled:.0f}{unit}"
    return f"{value:.0f}"
