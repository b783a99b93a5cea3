"""The paper's baseline: maximum cap and maximum batch, the cap clamped by the budget."""

from __future__ import annotations

from pals.control.policies.budget_guard import BudgetGuard, budget_warning, clamp_cap
from pals.control.types import Configuration, Decision, DecisionContext


class Baseline:
    """Maximum cap and maximum batch, as in the paper.

    Budget: cap-only enforcement. The cap is clamped to the budget expressed per GPU (node budgets
    through the node-power line P_node = alpha * sum(P_gpu) + beta) minus the governor's trim
    (`BudgetGuard`); the batch stays at its maximum.
    """

    name = "baseline"

    def __init__(self, batch_cap: int | None = None) -> None:
        self.batch_cap = batch_cap
        self.guard = BudgetGuard()

    def reset(self) -> None:
        self.guard.reset()

    def decide(self, ctx: DecisionContext) -> Decision:
        self.guard.update(ctx)
        bound = self.guard.cap_bound_w(ctx)
        batch = self.batch_cap or ctx.constraints.batch_cap_max
        if not ctx.constraints.power_cap_settable:  # batch-only node: leave the cap alone
            return Decision(config=Configuration(ctx.current.power_cap_w, batch),
                            reason="maximum batch (power caps not settable)")
        cap = clamp_cap(ctx.constraints.power_cap_max_w, bound, ctx.constraints)
        bound_hit = cap < ctx.constraints.power_cap_max_w
        reason = "maximum cap and batch" if not bound_hit else f"maximum batch, cap clamped to {cap:.0f} W by the budget"
        return Decision(
            config=Configuration(cap, batch),
            reason=reason,
            budget_bound=bound_hit,
            governor_trim=bound_hit and batch == ctx.current.batch_cap,
            warnings=budget_warning(bound, ctx.budget, ctx.constraints.power_cap_min_w),
        )
