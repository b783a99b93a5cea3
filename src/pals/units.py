"""Unit conversions at the boundaries.

Inside PALS everything is SI floats: W, J, s (clocks in MHz). NVML and Zeus
speak mW and mJ; convert only where their values enter or leave.
"""


def mw_to_w(milliwatts: float) -> float:
    """Milliwatts to watts."""
    return milliwatts / 1000.0


def w_to_mw(watts: float) -> int:
    """Watts to integer milliwatts (NVML takes integers)."""
    return int(round(watts * 1000.0))


def mj_to_j(millijoules: float) -> float:
    """Millijoules to joules."""
    return millijoules / 1000.0
