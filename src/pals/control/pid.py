"""A discrete PID controller with a dead band, output clamping and anti-windup.

PALS uses it on the normalised throughput error e = (target - measured) / target. Its output is
a fractional margin added to the target before candidates are scored, so a predictor that
over-estimates throughput is corrected by asking it for more (paper section 3.3, step 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from pals.errors import ConfigError


@dataclass
class PID:
    """u = kp*e + ki*sum(e*dt) + kd*de/dt, clamped to [output_min, output_max].

    Errors inside `deadband` count as zero (no integration, no proportional kick), so the
    discrete configuration space does not make the controller hunt. The integral is frozen
    beyond what saturates the output (back-calculation anti-windup) and, when `leak_per_s` > 0,
    decays towards zero while the error is zero.
    """

    kp: float = 0.5
    """Proportional gain (output per unit of normalised error)."""
    ki: float = 0.4
    """Integral gain. Units: 1/s."""
    kd: float = 0.0
    """Derivative gain. Units: s."""
    output_min: float = 0.0
    """Lowest output (0: the PID never asks for less than the target). Units: fraction of the target."""
    output_max: float = 0.3
    """Highest output (margin added to the target). Units: fraction of the target."""
    deadband: float = 0.05
    """Errors smaller than this count as zero. Units: fraction of the target."""
    leak_per_s: float = 0.05
    """Fraction of the integral forgotten per second while the error is inside the dead band."""

    def __post_init__(self) -> None:
        if self.output_min > self.output_max:
            raise ConfigError(f"PID output_min {self.output_min} exceeds output_max {self.output_max}")
        if min(self.kp, self.ki, self.kd, self.deadband, self.leak_per_s) < 0:
            raise ConfigError("PID gains, deadband and leak_per_s must be non-negative")
        self.reset()

    def reset(self) -> None:
        """Forget the integral and the last error (after a target change or a workload shift)."""
        self.integral_ = 0.0
        self.last_error_: float | None = None
        self.output_ = 0.0

    def update(self, error: float, dt_s: float) -> float:
        """Feed one error sample taken `dt_s` after the previous one; return the new output."""
        if abs(error) < self.deadband:
            error = 0.0
            self.integral_ *= max(0.0, 1.0 - self.leak_per_s * dt_s)
        derivative = 0.0 if self.last_error_ is None or dt_s <= 0 else (error - self.last_error_) / dt_s
        self.last_error_ = error
        self.integral_ += error * dt_s
        if self.ki > 0:
            # Back-calculation anti-windup: the integral never holds more than it takes to reach
            # the output limit given the current proportional and derivative terms.
            rest = self.kp * error + self.kd * derivative
            high = (self.output_max - rest) / self.ki
            low = (self.output_min - rest) / self.ki
            if error > 0 and self.integral_ > high:
                self.integral_ = high
            elif error < 0 and self.integral_ < low:
                self.integral_ = low
            self.integral_ = min(max(self.integral_, self.output_min / self.ki), self.output_max / self.ki)
        raw = self.kp * error + self.ki * self.integral_ + self.kd * derivative
        self.output_ = min(max(raw, self.output_min), self.output_max)
        return self.output_
