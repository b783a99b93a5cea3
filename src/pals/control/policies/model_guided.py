"""The machinery every model-guided policy shares: learn from the interval, decide whether to choose, choose.

One interval, in order:

1. The budget guard learns from measured power (`BudgetGuard.update`).
2. The estimators learn (`estimators.py`): warm-up, backlog, idle power, demand and bursts (once
   warm), the throughput at the configuration in force. At a stable configuration after the
   warm-up, the prediction error of the interval is recorded (`prediction_error_()`, logged in
   every decision's `extra`), then the online residuals learn (`residuals.py`: throughput from
   sustained capacity-limited runs, GPU power from every interval, both forgetting fast on a
   workload shift), and the power bias from capacity-limited intervals. The latency residual
   (measured / predicted TPOT and TTFT at the SLO's quantile) learns from settled, capacity-limited
   intervals and forgets on the same workload shifts.
3. The throughput error e = (target - measured) / target over the dwell window. When nothing was
   waiting, or the node was capacity-limited in under `limited_share_min` of the window's
   intervals, it served the load it was offered, so a shortfall is not an error (e = 0). The PID
   turns e into a margin on the target.
4. Trigger: the first decision; a budget or target change; measured power over the budget by more
   than `over_budget_trigger_frac`; a configuration in force over the budget's cap bound; |e| over
   `error_threshold` for `hysteresis_intervals` intervals in a row; the demand estimate appearing
   or moving by more than `demand_shift`; the burst headroom moving by more than `burst_shift`;
   the throughput correction at the configuration in force moving, confidently, by more than
   `ResidualConfig.reselect_shift` since it was chosen.
   With a latency SLO and `learn_latency`: the latency residual at the configuration in force becoming
   trusted or moving (`latency_residual.py`).
5. Without a trigger: hold, or, if the last choice sat at the budget's cap bound, follow the bound
   as the governor moves it (cap only, once it moved `follow_step_w`). With one: the selection
   (`selection.py`) on the model's predictions.

Subclasses (one file each) set only what differs: the grids, whether a PID corrects the target,
whether measured/predicted ratios are learnt.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pals.control.pid import PID
from pals.control.policies.budget_guard import BudgetGuard, clamp_cap
from pals.control.policies.config import ModelGuidedConfig
from pals.control.policies.estimators import (
    Backlog, BurstEstimate, DemandEstimate, DwellThroughput, IdlePower, LevelChange, PowerBias, WarmUp,
)
from pals.control.policies.interface import PerfModel
from pals.control.policies.latency_residual import LatencyResidual
from pals.control.policies.residuals import PredictionError, ResidualConfig, ResidualCorrection
from pals.control.policies.selection import (
    CAP_MATCH_W, BudgetLimit, Candidates, Choice, LatencyModel, Scores, candidate_grid, required_capacity_tps,
    filled_batch, partial_batch_power_w, score_candidates, select, slo_limit,
)
from pals.control.types import Configuration, Decision, DecisionContext, Observation
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError


@dataclass(frozen=True)
class RawPrediction:
    """The model's own prediction for one candidate, before the learnt residuals."""

    throughput_tps: float
    """Predicted capacity. Units: tokens/s."""
    gpu_power_w: float
    """Predicted busy GPU power, node total. Units: W."""
    node_power_w: float
    """Predicted busy node (wall) power. Units: W."""
    throughput_rel_std: float
    """Spread of the forest's trees over the capacity, relative (0 for a model without one)."""
    gpu_power_rel_std: float
    """Spread of the forest's trees over the GPU power, relative (0 for a model without one)."""


def _rel_spread(pred: Any, name: str, values: np.ndarray) -> np.ndarray:
    """The prediction's spread `name` relative to `values` (zeros when the model gives none)."""
    std = getattr(pred, name, None)
    if std is None:
        return np.zeros_like(values)
    return np.clip(np.asarray(std, dtype=float) / np.maximum(values, 1e-9), 0.0, 2.0)


class ModelGuidedPolicy:
    """Choose (cap, batch) from discrete candidates scored by a `PerfModel` (see the module docstring).

    Args:
        model: the fitted predictor (any `PerfModel`).
        power_caps_w: candidate caps per GPU (a single value fixes the cap). Units: W. On a node
            whose power caps cannot be set (`Constraints.power_cap_settable` False), only the
            batch is chosen.
        batch_caps: candidate batch caps (a single value fixes the batch).
        config: the knobs (`ModelGuidedConfig`); defaults when None.
        pid: the throughput-error PID whose output is the fractional margin asked of the
            prediction; a default `PID()` when the class `uses_pid`.
        residual_config: the online residual learner's knobs (`ResidualConfig`); defaults when None.
    """

    name = "model-guided"
    uses_pid = True
    """Correct the target by a PID on the throughput error."""
    learn_ratios = True
    """Correct predicted capacity and power by residuals learnt online (`residuals.py`)."""
    learn_latency = False
    """Apply the latency residual learnt online (`latency_residual.py`) to the SLO mask, with the narrower
    `slo_margin_corrected` once it is trusted. Off by default: on the shipped scenarios a residual learnt at
    one configuration and carried to the others made PALS wander (tests/control/test_slo.py's open-loop
    Mixtral run ended at batch 1); it is learnt and logged either way."""
    latency_model: LatencyModel | None = None
    """Predicts TPOT/TTFT per candidate (`pals.model.latency.LatencyPredictor`); with a latency SLO in
    force, candidates predicted to break it are infeasible. None: the SLO is not predicted."""

    def __init__(self, model: PerfModel, power_caps_w: Sequence[float], batch_caps: Sequence[int],
                 config: ModelGuidedConfig | None = None, pid: PID | None = None,
                 residual_config: ResidualConfig | None = None) -> None:
        if not power_caps_w or not batch_caps:
            raise ConfigError(f"policy {self.name}: the candidate cap and batch grids must not be empty")
        self.model = model
        self.config = config if config is not None else ModelGuidedConfig()
        self.power_caps_w = tuple(sorted(float(c) for c in power_caps_w))
        self.batch_caps = tuple(sorted(int(b) for b in batch_caps))
        self.pid = pid if pid is not None else (PID() if self.uses_pid else None)
        self.residual_config = residual_config if residual_config is not None else ResidualConfig()
        self.guard = BudgetGuard()
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.guard.reset()
        if self.pid is not None:
            self.pid.reset()
        self.warmup = WarmUp(c.warmup_s)
        self.backlog = Backlog(c.backlog_intervals, c.full_batch_fraction)
        self.idle_power = IdlePower(c.idle_power_smoothing, c.idle_fraction_of_min_cap)
        change = LevelChange(c.demand_change_s, c.demand_change_z) if c.demand_change_z > 0 else None
        self.demand = DemandEstimate(c.demand_window_s, c.demand_min_fill, c.demand_backlogged_max, c.demand_shift,
                                     change)
        self.bursts = BurstEstimate(c.burst_z, c.burst_window_s, c.burst_history_s, c.burst_min_windows,
                                    c.burst_prior_s, c.burst_cv_prior, c.burst_shift)
        self.residuals_ = ResidualCorrection(self.residual_config)
        """Throughput and power residuals learnt online (replaces the old measured/predicted ratios)."""
        self.prediction_error = PredictionError(self.residual_config.error_window_s)
        self.latency_residual_ = LatencyResidual()
        """measured / predicted latency at the SLO's quantile, learnt online (`latency_residual.py`)."""
        self.latency_at_select_: tuple[bool, float] = (False, 1.0)
        """(latency residual trusted, its TPOT factor at the chosen configuration) when the selection last ran."""
        self.raw_: dict[Configuration, RawPrediction] = {}
        """Per candidate of the last selection: the model's own predictions and relative spreads."""
        self.limited_run_ = 0
        """Consecutive capacity-limited intervals."""
        self.factor_at_select_: float | None = None
        """The throughput correction at the chosen configuration when it was chosen."""
        self.workload_: WorkloadDescriptor | None = None
        """The live workload the last selection predicted for (None: the profile's own)."""
        self.power_bias = PowerBias(c.power_bias_smoothing, c.power_bias_floor_frac)
        self.dwell = DwellThroughput(c.smooth_intervals, c.min_window_intervals)
        self.above_band_ = 0
        self.since_change_ = 0
        self.decided_once_ = False
        self.chose_bound_ = False
        """The last selection chose the budget's cap bound: the cap follows the governor from then on."""
        self.last_choice_: Configuration | None = None
        self.last_prediction_: dict[Configuration, tuple[float, float]] = {}
        """Per candidate of the last selection: (predicted capacity, uncorrected; busy power in the budget's kind)."""
        self.frontier_: list[dict[str, float]] = []
        self._last_bound = False
        self._last_warnings: tuple[str, ...] = ()

    @property
    def demand_tps_(self) -> float | None:
        """The offered-load estimate (None: unknown or saturating)."""
        return self.demand.tps_

    def predicted_table(self) -> list[dict[str, float]]:
        """The last selection's predicted table for the live workload: capacity (corrected) and busy power per candidate."""
        return list(self.frontier_)

    def is_capacity_limited(self, ctx: DecisionContext) -> bool:
        """The interval just observed ran at capacity (batch full with requests waiting, or a sustained queue)."""
        obs = ctx.observation
        return obs is not None and self.backlog.capacity_limited(obs, ctx.constraints.replicas)

    # -- learning ----------------------------------------------------------------------------------

    def _observe(self, ctx: DecisionContext) -> tuple[float | None, float]:
        """Feed every estimator the interval just seen; return (throughput error, PID margin)."""
        self._observe_load(ctx)
        dwell_tps = self._dwell_tps(ctx) if ctx.observation is not None else None
        self._learn(ctx)
        error = self._error(ctx, dwell_tps)
        margin = 0.0
        if self.pid is not None:
            margin = self.pid.update(error, ctx.observation.interval_s) if error is not None else self.pid.output_
        if error is not None and abs(error) > self.config.error_threshold:
            self.above_band_ += 1
        elif error is not None:
            self.above_band_ = 0
        return error, margin

    def _observe_load(self, ctx: DecisionContext) -> None:
        """Warm-up, backlog run, idle power, and (once warm) bursts and demand."""
        obs = ctx.observation
        if obs is None:
            return
        self.warmup.update(obs)
        self.backlog.update(obs)
        self.idle_power.update(obs, ctx.constraints.num_gpus)
        if not self.warmup.warm(obs):
            return
        self.demand.update(obs.generated_tokens, obs.interval_s, self.is_capacity_limited(ctx), obs.mean_output_tokens)
        if self.demand.just_changed_:
            self.bursts.restart()
        self.bursts.update(obs)

    def _dwell_tps(self, ctx: DecisionContext) -> float | None:
        """Throughput since the configuration in force was applied; the interval right after a
        change (a transient) and the warm-up do not count."""
        obs = ctx.observation
        if self.since_change_ <= 0 or not self.warmup.warm(obs):
            self.dwell.clear()
            return None
        self.dwell.add(obs.generated_tokens, obs.interval_s, self.is_capacity_limited(ctx))
        return self.dwell.tps()

    def _error(self, ctx: DecisionContext, dwell_tps: float | None) -> float | None:
        obs = ctx.observation
        if obs is None or ctx.target is None or dwell_tps is None:
            return None
        error = (ctx.target.target_tps - dwell_tps) / ctx.target.target_tps
        if error > 0 and obs.demand_limited:
            return 0.0  # all offered load served: not a shortfall the controller can fix
        if self.dwell.limited_share() < self.config.limited_share_min:
            # The node served the load it was offered over most of the window: a lull with a
            # momentary queue is no shortfall, and delivering an offered load above the target is
            # no over-delivery to correct (the demand estimate re-runs the selection if it moves).
            return 0.0
        return error

    def _learn(self, ctx: DecisionContext) -> None:
        """Residuals (throughput from capacity-limited intervals, power from every interval) and the
        power bias, at a stable configuration after the warm-up; the prediction error first."""
        obs = ctx.observation
        if obs is None:
            return
        if self.residuals_.note_workload(obs):
            self.latency_residual_.forget()
            if self.pid is not None:
                self.pid.reset()
        if self.warmup.warm(obs):
            self.latency_residual_.observe(ctx.current, obs, ctx.slo, self.latency_model, self.is_capacity_limited(ctx))
        self.limited_run_ = self.limited_run_ + 1 if self.is_capacity_limited(ctx) else 0
        stable = self.since_change_ >= 1 and ctx.current == self.last_choice_
        raw = self.raw_.get(ctx.current)
        if not (stable and raw is not None) or not self.warmup.warm(obs):
            return
        c, config = ctx.constraints, ctx.current
        # Capacity is only observed when the node runs at capacity, and not while it is filling.
        limited = self.limited_run_ >= self.residual_config.sustained_intervals
        idle_w = self.idle_power.per_gpu_w(c.power_cap_min_w) * c.num_gpus
        capacity_tps = raw.throughput_tps * self._throughput_factor(config)
        utilisation = 1.0 if limited else min(1.0, obs.throughput_tps / max(capacity_tps, 1e-9))
        busy_w = raw.gpu_power_w * self._power_factor(config)
        # The error of the predictions made before this interval, then learn from it.
        self.prediction_error.add(config, obs.interval_s, capacity_tps if limited else None, obs.throughput_tps,
                                  utilisation * busy_w + (1.0 - utilisation) * min(idle_w, busy_w), obs.gpu_power_w)
        if self.learn_ratios:
            if limited:
                self.residuals_.record_throughput(config, obs.throughput_tps, raw.throughput_tps, obs.interval_s,
                                                  raw.throughput_rel_std)
            self.residuals_.record_power(config, obs.gpu_power_w, raw.gpu_power_w, idle_w, utilisation,
                                         obs.interval_s, raw.gpu_power_rel_std)
        if self.limited_run_ >= 1 and ctx.budget is not None and not ctx.constraints_changed:
            # Against the model's own power: the selection's budget test adds the bias to that.
            predicted_w = raw.gpu_power_w if ctx.budget.kind == "gpu" else raw.node_power_w
            self.power_bias.update(ctx.measured_budget_power_w(), predicted_w, ctx.budget.budget_w)

    def _throughput_factor(self, config: Configuration) -> float:
        return self.residuals_.throughput.factor(config) if self.learn_ratios else 1.0

    def _power_factor(self, config: Configuration) -> float:
        return self.residuals_.power.factor(config) if self.learn_ratios else 1.0

    @property
    def memory_(self) -> ResidualCorrection:
        """The learnt corrections (the old name of `residuals_`)."""
        return self.residuals_

    def prediction_error_(self) -> dict[str, float | None]:
        """Relative error of the corrected predictions at the configuration in force over the last
        `ResidualConfig.error_window_s`: throughput (capacity-limited intervals) and GPU power. Units: %."""
        tps, power = self.prediction_error.error()
        return {"prediction_error_tps_pct": None if tps is None else round(100.0 * tps, 2),
                "prediction_error_power_pct": None if power is None else round(100.0 * power, 2)}

    def _residual_moved(self, ctx: DecisionContext) -> str | None:
        """The throughput correction at the configuration in force moved (confidently) since it was chosen."""
        then = self.factor_at_select_
        if not self.learn_ratios or then is None or ctx.current != self.last_choice_:
            return None
        learnt = self.residuals_.throughput
        if learnt.seconds.get(ctx.current, 0.0) < self.residual_config.reselect_min_s:
            return None
        if learnt.level_var_ is None or math.sqrt(learnt.level_var_) > 0.5 * self.residual_config.reselect_shift:
            return None  # still learning after a shift: wait for a confident estimate
        now = self._throughput_factor(ctx.current)
        if abs(now / then - 1.0) <= self.residual_config.reselect_shift:
            return None
        return f"prediction corrected: capacity x{then:.2f} -> x{now:.2f} of the model at the configuration in force"

    def _latency_moved(self, ctx: DecisionContext) -> str | None:
        """The latency residual became trusted, or its factor at the configuration in force moved, since the selection."""
        learnt = self.latency_residual_
        if ctx.slo is None or self.latency_model is None or not self.learn_latency or not learnt.trusted:
            return None
        trusted_then, then = self.latency_at_select_
        now = float(learnt.tpot_factors([ctx.current])[0])
        if trusted_then and abs(now / then - 1.0) <= self.residual_config.reselect_shift:
            return None
        return f"latency prediction corrected: TPOT x{now:.2f} of the model at the configuration in force"

    # -- deciding ----------------------------------------------------------------------------------

    def decide(self, ctx: DecisionContext) -> Decision:
        over_frac = self.guard.update(ctx)
        error, margin = self._observe(ctx)
        bound = self.guard.cap_bound_w(ctx)
        trigger = self._trigger(ctx, over_frac, bound, error)
        self.since_change_ += 1
        if trigger is None and bound is not None and self.chose_bound_ and ctx.constraints.power_cap_settable:
            followed = self._follow_bound(ctx, bound, margin)
            if followed is not None:
                return followed
        if trigger is None:
            return self._hold(ctx, bound, margin, error)
        decision = self._select(ctx, bound, margin, trigger)
        if self.decided_once_ and _same_within(decision.config, ctx.current, self.config.follow_step_w):
            # The selection landed on the configuration in force up to a fraction of a watt (the budget's
            # cap bound moves with the governor's trims): no change for nothing.
            decision = dataclasses.replace(decision, config=ctx.current)
        self.above_band_ = 0
        self.decided_once_ = True
        if decision.config != ctx.current:
            self.since_change_ = 0
        self.last_choice_ = decision.config
        return decision

    def _trigger(self, ctx: DecisionContext, over_frac: float | None, bound: float | None,
                 error: float | None) -> str | None:
        """Why the selection must run now (None: hold or follow the bound)."""
        c = self.config
        if not self.decided_once_ or ctx.observation is None:
            return "first decision"
        if ctx.constraints_changed:
            return "budget or target changed"
        if over_frac is not None and over_frac > c.over_budget_trigger_frac:
            return f"power {over_frac * 100:.1f}% over budget"
        # A cap less than `follow_step_w` over the bound is the governor's own jitter (it trims on measured
        # power): re-selecting for it moved the cap by fractions of a watt every few seconds.
        slack_w = max(CAP_MATCH_W, c.follow_step_w)
        if bound is not None and ctx.current.power_cap_w > max(bound, ctx.constraints.power_cap_min_w) + slack_w:
            return "configuration in force exceeds the budget cap"
        if self.above_band_ >= c.hysteresis_intervals:
            return f"throughput error {error * 100:+.1f}% for {self.above_band_} intervals"
        if self.demand.changed_:
            return "offered load changed level: " + self.demand.describe_move()
        if self.demand.moved() or self.demand.first_:
            prefix = "offered load changed: " if self.demand.moved() else "first offered-load estimate: "
            return prefix + self.demand.describe_move()
        if self.demand.matured_ and self.demand.tps_ is not None:
            return "offered-load estimate over its full window: " + self.demand.describe_move()
        if self.demand.tps_ is not None and self.bursts.moved():
            return (f"load burstiness changed: headroom {self.bursts.at_select_ * 100:.0f}% -> "
                    f"{self.bursts.margin() * 100:.0f}%")
        return self._residual_moved(ctx) or self._latency_moved(ctx)

    def _follow_bound(self, ctx: DecisionContext, bound: float, margin: float) -> Decision | None:
        """The configuration in force sits at the budget's cap bound, which the governor moved: follow
        it with the cap (same batch), as Baseline does, without re-running the selection."""
        follow_w = clamp_cap(ctx.constraints.power_cap_max_w, bound, ctx.constraints)
        if abs(follow_w - ctx.current.power_cap_w) < self.config.follow_step_w:
            return None
        config = Configuration(follow_w, ctx.current.batch_cap)
        self.last_choice_ = config
        self.since_change_ = 0
        return Decision(config=config, reason=f"cap follows the budget governor: {follow_w:.1f} W",
                        candidates_considered=0, candidates_feasible=0, budget_bound=bool(self._last_bound),
                        governor_trim=True, warnings=self._last_warnings,
                        extra={"pid_margin": round(margin, 4), "budget_cap_bound_w": round(bound, 2),
                               **self.prediction_error_()})

    def _hold(self, ctx: DecisionContext, bound: float | None, margin: float, error: float | None) -> Decision:
        c = self.config
        why = "hold: no sustained error" if error is None or abs(error) <= c.error_threshold else (
            f"hold: error {error * 100:+.1f}% for {self.above_band_}/{c.hysteresis_intervals} intervals"
        )
        predicted = self.last_prediction_.get(ctx.current)
        return Decision(
            config=ctx.current,
            reason=why,
            candidates_considered=0,
            candidates_feasible=0,
            predicted_throughput_tps=None if predicted is None else predicted[0],
            predicted_node_power_w=None,
            budget_bound=bool(bound is not None and self._last_bound),
            warnings=self._last_warnings,
            extra={"pid_margin": round(margin, 4), **self.prediction_error_()},
        )

    def _select(self, ctx: DecisionContext, bound: float | None, margin: float, trigger: str) -> Decision:
        c, cfg = ctx.constraints, self.config
        if not c.power_cap_settable:  # batch-only control: the cap in force is the only one
            bound = None
        candidates = candidate_grid(self.power_caps_w, self.batch_caps, c, ctx.current, bound)
        self.workload_ = live_workload(ctx.observation)
        pred = self.model.predict_candidates(candidates.power_cap_w, candidates.batch_cap, self.workload_)
        thr, gpu_w, node_w, factors = self._corrected(ctx, candidates, pred)
        demand = self.demand.tps_
        idle_w = self.idle_power.per_gpu_w(c.power_cap_min_w) * c.num_gpus
        # Below capacity the engine keeps stepping with the batch the demand fills: that batch's power.
        partial = None if demand is None else partial_batch_power_w(candidates, thr * factors, gpu_w, demand, idle_w)
        scores = score_candidates(thr * factors, gpu_w, node_w, demand, idle_w, ctx.power_model.alpha,
                                  objective=cfg.objective, node_line=ctx.power_model, partial_gpu_power_w=partial,
                                  partial_weight=1.0)
        budget = None if ctx.budget is None else BudgetLimit(ctx.budget, bound, c.power_cap_min_w,
                                                              self.guard.margin_frac, self.power_bias.bias_w_)
        target_tps = None if ctx.target is None else ctx.target.target_tps
        required = required_capacity_tps(
            target_tps, target_margin=cfg.target_margin, pid_margin=margin, demand_tps=demand,
            demand_seen=self.demand.seen_, burst_margin=self.bursts.margin(),
            demand_target_multiple=cfg.demand_target_multiple,
        )
        # The latency a candidate must keep is that of a burst: the demand with its burst headroom.
        slo = self._slo_limit(ctx, candidates, thr * factors,
                              None if demand is None else demand * (1.0 + self.bursts.margin()))
        choice = select(candidates, scores, budget=budget, target_tps=target_tps, required_tps=required,
                        current=ctx.current, tie_tolerance=cfg.tie_tolerance, error_threshold=cfg.error_threshold,
                        slo=slo)
        self._remember(ctx, candidates, thr, scores, choice)
        chosen = candidates.configs[choice.index]
        self.factor_at_select_ = self._throughput_factor(chosen)
        self.latency_at_select_ = (self.latency_residual_.trusted, float(self.latency_residual_.tpot_factors([chosen])[0]))
        # At the budget's cap bound: from now on the cap follows the governor as it moves the bound.
        self.chose_bound_ = bool(bound is not None and abs(chosen.power_cap_w - clamp_cap(c.power_cap_max_w, bound, c))
                                 <= CAP_MATCH_W)
        i = choice.index
        return Decision(
            config=chosen,
            reason=f"{trigger}: {choice.reason}",
            candidates_considered=choice.considered,
            candidates_feasible=choice.feasible,
            candidates_meeting_target=choice.meeting_target,
            predicted_throughput_tps=float(scores.delivered_tps[i]),
            predicted_gpu_power_w=float(scores.delivered_gpu_power_w[i]),
            predicted_node_power_w=float(scores.delivered_node_power_w[i]),
            predicted_tokens_per_joule=float(scores.delivered_tps[i] / max(scores.delivered_node_power_w[i], 1e-9)),
            budget_bound=choice.budget_bound,
            warnings=choice.warnings,
            extra={"pid_margin": round(margin, 4), "power_bias_w": round(self.power_bias.bias_w_, 2),
                   "budget_cap_bound_w": None if bound is None else round(bound, 2),
                   "predicted_capacity_tps": round(float(scores.capacity_tps[i]), 3),
                   "demand_tps": None if demand is None else round(demand, 3), **self.prediction_error_(),
                   **({} if slo is None else self.latency_residual_.logged(chosen))},
        )

    def _slo_limit(self, ctx: DecisionContext, candidates: Candidates, capacity_tps: np.ndarray, demand: float | None):
        """Predicted latency against the SLO: at the batch the demand fills (`ModelGuidedConfig.partial_batch`),
        corrected, with the narrower margin, once the latency residual is trusted."""
        learnt, w = self.latency_residual_, self.config.partial_batch
        batch = None
        if demand is not None and w > 0 and ctx.slo is not None:
            full = candidates.batch_cap.astype(float)
            batch = np.exp(w * np.log(filled_batch(candidates, capacity_tps, demand)) + (1.0 - w) * np.log(full))
        if not (self.learn_latency and learnt.trusted):
            return slo_limit(self.latency_model, candidates, ctx.slo, self.config.slo_margin, running_batch=batch)
        configs = list(candidates.configs)
        return slo_limit(self.latency_model, candidates, ctx.slo, self.config.slo_margin_corrected,
                         learnt.tpot_factors(configs), learnt.ttft_factors(configs), running_batch=batch)

    def _corrected(self, ctx: DecisionContext, candidates: Candidates,
                   pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(raw capacity, corrected GPU power, corrected node power, capacity factors) per candidate;
        keeps the raw predictions and their spreads, which the residuals are learnt against."""
        configs = list(candidates.configs)
        thr = np.asarray(pred.throughput_tps, dtype=float)
        gpu_raw = np.asarray(pred.gpu_power_total_w, dtype=float)
        node_raw = np.asarray(pred.node_power_w, dtype=float)
        thr_rel = _rel_spread(pred, "throughput_std_tps", thr)
        gpu_rel = _rel_spread(pred, "gpu_power_std_w", gpu_raw)
        raw = {cfg: RawPrediction(float(thr[i]), float(gpu_raw[i]), float(node_raw[i]), float(thr_rel[i]),
                                  float(gpu_rel[i])) for i, cfg in enumerate(configs)}
        old, new = self.raw_.get(ctx.current), raw.get(ctx.current)
        if old is not None and new is not None and min(old.throughput_tps, new.throughput_tps,
                                                        old.gpu_power_w, new.gpu_power_w) > 0:
            # The live workload moved the model's own prediction at the configuration in force: the
            # measured level stays where the data put it, the model's change reaches the others.
            self.residuals_.throughput.rebase(math.log(new.throughput_tps / old.throughput_tps))
            self.residuals_.power.rebase(math.log(new.gpu_power_w / old.gpu_power_w))
        self.raw_ = raw
        if not self.learn_ratios:
            return thr, gpu_raw, node_raw, np.ones(len(configs))
        self.residuals_.throughput.set_level_prior(float(np.mean(thr_rel)))
        self.residuals_.power.set_level_prior(float(np.mean(gpu_rel)))
        # The power residual is learnt and reported but not yet applied to the selection: learnt
        # at one cap it made that cap look cheaper than its unvisited neighbours (the split
        # between level and shape follows the priors), which kept PALS at the first cap it chose
        # and let a GPU budget overshoot. The power bias (`PowerBias`) still corrects the budget test.
        return thr, gpu_raw, node_raw, self.residuals_.throughput.factors(configs)

    def _remember(self, ctx: DecisionContext, candidates: Candidates, thr: np.ndarray, scores: Scores,
                  choice: Choice) -> None:
        """Keep what the next intervals compare against: predictions, the frontier, the estimates used."""
        gpu_kind = ctx.budget is not None and ctx.budget.kind == "gpu"
        self.last_prediction_ = {
            config: (float(thr[i]), float(scores.gpu_power_w[i] if gpu_kind else scores.node_power_w[i]))
            for i, config in enumerate(candidates.configs)
        }
        self.frontier_ = [
            {"power_cap_w": float(candidates.power_cap_w[i]), "batch_cap": int(candidates.batch_cap[i]),
             "throughput_tps": float(scores.capacity_tps[i]), "gpu_power_w": float(scores.gpu_power_w[i]),
             "node_power_w": float(scores.node_power_w[i])}
            for i in range(len(candidates.configs)) if candidates.in_grid[i]
        ]
        self.demand.mark_selected()
        self.bursts.mark_selected()
        self._last_bound = choice.budget_bound
        self._last_warnings = choice.warnings


def _same_within(a: Configuration, b: Configuration, cap_w: float) -> bool:
    """The same batch cap and caps less than `cap_w` apart."""
    return a.batch_cap == b.batch_cap and abs(a.power_cap_w - b.power_cap_w) < cap_w


def live_workload(obs: Observation | None) -> WorkloadDescriptor | None:
    """The live workload as the predictor's input: the node's recent mean prompt and output lengths.

    Candidates are scored by their capacity (profiles are taken at saturation), so the arrival
    rate is left out (None = saturating): the offered load enters through the demand estimate
    instead. None (the profile's own workload) while the node reports no lengths.
    """
    if obs is None or obs.mean_prompt_tokens is None or obs.mean_output_tokens is None:
        return None
    if not (obs.mean_prompt_tokens > 0 and obs.mean_output_tokens > 0):
        return None
    return WorkloadDescriptor(float(obs.mean_prompt_tokens), float(obs.mean_output_tokens), None, "live")
