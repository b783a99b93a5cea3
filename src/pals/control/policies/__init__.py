"""Control policies behind one interface: the only thing that differs between runs.

A policy maps a `DecisionContext` (configuration in force, the interval just observed, budget,
target) to a `Decision` (`interface.Policy`). Policies never see the node. All of them obey the
power budget the same way at the last step (`budget_guard.BudgetGuard`): the per-GPU cap is
clamped to the budget expressed as GPU power per GPU, corrected by a governor on MEASURED power
averaged over the QoS window. A power cap is the one knob that bounds power within one interval.
A model-guided policy whose choice sits at the bound follows it as the governor moves it (cap
only). They differ in how they choose below that bound:

- `Baseline` (`baseline.py`): maximum cap, maximum batch (the paper's baseline). Under a budget it
  runs at the budget-derived cap with the batch left at maximum.
- `AdaptiveBatch` (`adaptive_batch.py`): cap fixed (maximum, clamped by the budget), batch chosen
  with the predictor.
- `AdaptiveCap` (`adaptive_cap.py`): batch fixed (maximum), cap chosen with the predictor.
- `Pals` (`pals.py`): joint cap x batch, model-guided with PID correction and hysteresis.
- `Oracle` (`oracle.py`, `oracle_plan.py`): the best plan of configurations over time by the
  simulator's ground truth of the load being served (no PALS margins, the headline objective,
  the same QoS allowance as its comparison); an upper bound that exists only for the simulated node.
- `Static` (`static.py`): one fixed (cap, batch), its cap clamped by the budget as Baseline's is;
  what the hindsight oracle (`pals.runtime.hindsight`) runs for every point of the grid.

Objective: the model-guided policies and the Oracle maximize tokens per NODE joule (the loop's
node-power line over GPU power, as the summaries' headline `tokens_per_joule` counts them) unless
`ModelGuidedConfig.objective` (`PolicyOptions.objective`, `pals run --objective`) says "gpu".

The three model-guided policies (AdaptiveBatch, AdaptiveCap, PALS) share `model_guided.ModelGuidedPolicy` (what happens in one
interval), built from small parts: `config.ModelGuidedConfig` (every knob, with its default),
`estimators` (what is learnt: warm-up, backlog, idle power, demand, bursts, capacity correction,
power bias, dwell throughput), `pid.PID` (`pals.control.pid`) and `selection` (the choice itself,
as pure functions). Numbers are stated in those files' fields, not here.

Load-aware objective: with offered load D a configuration delivers T(c) = min(D, T_cap(c)). Below
its capacity a continuously batching engine runs continuously at a smaller running batch, the one
whose own capacity is D, so it draws the power predicted along its cap's batches at that capacity
(`selection.partial_batch_power_w`, interpolated from P_idle at zero: the node's GPUs idling with
the engine's context loaded, learnt from intervals in which nothing ran; until then
`idle_fraction_of_min_cap` x the lowest cap per GPU). D is the mean delivered throughput over
`demand_window_s`, unknown (treated as at least every capacity: the saturated objective
T_cap / P_busy) when the node was backlogged over most of it; the selection runs again once its
window is full. Candidates must also keep up with D plus its burst headroom: the demand is a mean,
and over a QoS window Poisson arrivals swing it by 10-20 %, so the demand term is
D x (1 + `burst_z` x CV + PID output), CV the coefficient of variation of delivered throughput over
rolling QoS windows (shrunk towards `burst_cv_prior`); the target term is
target x (1 + `target_margin` + PID output). Predicted capacity is corrected by residuals learnt
ONLY from capacity-limited intervals (`capacity_limited`) after the warm-up: when the offered load
is below capacity the node delivers the demand, which says nothing about capacity.

Adding a policy: one file in this package with its class (a `ModelGuidedPolicy` subclass sets
only its name, grids, `uses_pid` and `learn_ratios`), and one entry in `registry._REGISTRY`;
`POLICY_NAMES` and `make_policy` follow.
"""

from pals.control.policies.adaptive_batch import AdaptiveBatch
from pals.control.policies.adaptive_cap import AdaptiveCap
from pals.control.policies.baseline import Baseline
from pals.control.policies.budget_guard import BudgetGuard
from pals.control.policies.config import (
    DEFAULT_BURST_CV, DEFAULT_IDLE_FRACTION_OF_MIN_CAP, FULL_BATCH_FRACTION, ModelGuidedConfig,
)
from pals.control.policies.interface import PerfModel, Policy, capacity_limited
from pals.control.policies.model_guided import ModelGuidedPolicy
from pals.control.policies.config import DEFAULT_OBJECTIVE, OBJECTIVES
from pals.control.policies.oracle import ORACLE_MAX_QOS_VIOLATION_PCT, LoadTruth, Oracle, PlanOutcome, TruthTable
from pals.control.policies.pals import Pals
from pals.control.policies.registry import POLICY_NAMES, PolicyEntry, PolicyGrid, PolicyOptions, make_policy
from pals.control.policies.static import Static, check_fixed_configuration
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W

__all__ = [
    "AdaptiveBatch", "AdaptiveCap", "Baseline", "BudgetGuard", "DEFAULT_BURST_CV", "DEFAULT_IDLE_FRACTION_OF_MIN_CAP",
    "DEFAULT_OBJECTIVE", "FULL_BATCH_FRACTION", "LoadTruth", "ModelGuidedConfig", "ModelGuidedPolicy", "OBJECTIVES",
    "ORACLE_MAX_QOS_VIOLATION_PCT", "Oracle", "PAPER_BATCH_CAPS", "PAPER_POWER_CAPS_W", "Pals", "PerfModel", "PlanOutcome",
    "POLICY_NAMES", "Policy", "PolicyEntry", "PolicyGrid", "PolicyOptions", "Static", "TruthTable",
    "capacity_limited", "check_fixed_configuration", "make_policy",
]
