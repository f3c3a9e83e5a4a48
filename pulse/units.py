"""How counts and sizes are written for people: 1.41M params, 5.21k tok/s, 12.3 MiB. One home for every table."""

from __future__ import annotations


def fmt_count(n: float, spec: str = ".2f") -> str:
    """1_410_000 → "1.41M" (k, M, G; `spec` formats the mantissa, e.g. ".3g"); below 1000 the number itself."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:{spec}}{unit}"
    return f"{n:.0f}" if spec.endswith("f") else f"{n:{spec}}"


def fmt_bytes(n: float, spec: str = ".2f") -> str:
    """12_900_000 → "12.30 MiB" (KiB, MiB, GiB, powers of two); below 1 KiB in bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:{spec}} {unit}"
    return f"{n:.0f} B"
