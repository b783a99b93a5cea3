"""Static: one fixed (cap, batch) held through the same loop and budget guard as every policy.

What an operator compares against, and what the hindsight oracle (`pals.runtime.hindsight`) runs
for every point of the grid. Under a budget its cap is clamped to the guard's bound exactly as
Baseline's is (Baseline is Static at the GPU's highest cap and the engine's largest batch).
"""

from __future__ import annotations

from pals.control.policies.budget_guard import BudgetGuard, budget_warning, clamp_cap
from pals.control.types import Configuration, Decision, DecisionContext
from pals.core.node import Constraints
from pals.errors import ConfigError


def check_fixed_configuration(power_cap_w: float, batch_cap: int, constraints: Constraints,
                              check_cap: bool = True) -> None:
    """Raise one ConfigError naming the fix when (cap, batch) is outside the node's settable ranges
    (the cap only when `check_cap`: a node whose caps cannot be set keeps its own)."""
    c = constraints
    if check_cap and not c.power_cap_min_w <= power_cap_w <= c.power_cap_max_w:
        raise ConfigError(
            f"--power-cap-w {power_cap_w:g} is outside the GPU's range; give a cap from "
            f"{c.power_cap_min_w:g} to {c.power_cap_max_w:g} W"
        )
    if isinstance(batch_cap, bool) or int(batch_cap) != batch_cap or not c.batch_cap_min <= batch_cap <= c.batch_cap_max:
        raise ConfigError(
            f"--batch-cap {batch_cap!r} is outside the engine's range; give a whole number from "
            f"{c.batch_cap_min} to {c.batch_cap_max}"
        )


class Static:
    """Holds `power_cap_w` and `batch_cap`; under a budget the cap is clamped to the guard's bound.

    The configuration is checked against the node's ranges at the first decision (the policy is
    built before it meets the node; `check_fixed_configuration` lets callers check earlier).
    """

    name = "static"

    def __init__(self, power_cap_w: float, batch_cap: int) -> None:
        if not power_cap_w > 0:
            raise ConfigError(f"static policy: the power cap must be a positive number of W, got {power_cap_w!r}")
        if isinstance(batch_cap, bool) or int(batch_cap) != batch_cap or batch_cap < 1:
            raise ConfigError(f"static policy: the batch cap must be a whole number of at least 1, got {batch_cap!r}")
        self.power_cap_w = float(power_cap_w)
        self.batch_cap = int(batch_cap)
        self.guard = BudgetGuard()
        self._checked = False

    def reset(self) -> None:
        self.guard.reset()

    def decide(self, ctx: DecisionContext) -> Decision:
        c = ctx.constraints
        if not self._checked:
            check_fixed_configuration(self.power_cap_w, self.batch_cap, c, check_cap=c.power_cap_settable)
            self._checked = True
        self.guard.update(ctx)
        bound = self.guard.cap_bound_w(ctx)
        fixed = f"fixed {self.power_cap_w:g} W / batch {self.batch_cap}"
        if not c.power_cap_settable:  # batch-only node: the cap in force stays
            return Decision(config=Configuration(ctx.current.power_cap_w, self.batch_cap),
                            reason=f"{fixed} (power caps not settable: batch only)")
        cap = clamp_cap(self.power_cap_w, bound, c)
        bound_hit = cap < self.power_cap_w
        return Decision(
            config=Configuration(cap, self.batch_cap),
            reason=fixed if not bound_hit else f"{fixed}, cap clamped to {cap:.0f} W by the budget",
            budget_bound=bound_hit,
            governor_trim=bound_hit and self.batch_cap == ctx.current.batch_cap,
            warnings=budget_warning(bound, ctx.budget, c.power_cap_min_w),
        )
