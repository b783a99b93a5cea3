"""Offline profiling: measure a grid of (power cap, batch cap) points through the Node protocol.

The same code profiles the simulated node and a real vLLM node: it only uses
`Node.constraints/sample/apply` and a `Clock`. For each point it applies the
configuration, waits a warm-up, then measures one window from counter deltas:

- throughput: generated_tokens_total delta / dt (tokens/s);
- GPU power: cumulative GPU energy delta / dt (W), so it is the true window mean;
- node power: mean of the node's `node_power_w` gauge over samples taken during the
  window, when the node reports one (simulator, IPMI);
- latency: the node's recent-window TTFT/TPOT summaries at the end of the window.

Lowering the batch cap does not preempt running sequences (vLLM lets them finish; so does the
simulator), so right after a large batch a small-batch point still runs the old batch down for as long
as its longest request needs (seconds at batch 64 with a few hundred output tokens: longer than a
short warm-up). After applying each point the profiler therefore first *settles*: it waits (at most
`settle_max_s`, default 120 s of node time) until `requests_running` is at most the new batch cap times
the node's replicas, and only then warms up. Without it a batch-1 point measured right after batch 64
reported 2.2x its throughput (paper grid, 150 W batch 64 -> 200 W batch 1, 2 s warm-up).

Under an open-loop load (a Poisson arrival rate), a backlog built at a small batch cap would carry
into the next points and saturate them too, so after settling the profiler also *drains*: it waits
(at most `drain_max_s`, default 60 s of node time) until `requests_waiting` is back to `drain_waiting`
or fewer, and then, when there was a backlog, until as many requests have finished as were running
(the batch is still full of the backlog's requests, more than the offered load keeps running:
without this wait a 20 s window overstated the offered load by 16 %). Then it warms up and measures.
A point whose capacity is below the offered load never drains; the bound keeps that from stalling
the run (the point is measured backlogged, as it would run). Under a saturating (closed-loop) load
the queue is full by design, so no drain is attempted. Only `Node.sample/apply` and the `Clock` are
used, so this works on the simulated node and on a real one alike.

A point is measured at steady state. Its batch starts at once (a fresh node, a raised batch cap), so
for about one mean request lifetime the node only decodes, its KV cache not yet grown to preempting
sizes, and that wave recurs with the same period: under long requests (2,400 / 1,000 tokens, Llama-2-7B
TP 1) a 10 s warm-up and 30 s window rated batch 32 at 0.87x batch 64's tokens/J where a warm node gives
1.02x. So after the warm-up the profiler waits until `steady_lifetimes` (`STEADY_LIFETIMES`) mean request
lifetimes have passed since the point started and stretches the window to as many, each bounded by
`steady_max_s` (`STEADY_MAX_S`). The lifetime comes from counters by Little's law (`request_lifetime_s`),
alike on simulated and real nodes; short requests' profiles take little longer (docs/simulator.md,
"Profiling at steady state").

Each finished point is written to the profile file at once (atomic rewrite), so a
killed run loses no finished point, and a rerun with `resume=True` skips points
already in the file. The node's original power cap and batch cap are restored at
the end, also when the run fails or is interrupted.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from pals.core.clock import Clock
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError, ProfileError
from pals.model.profile import (
    Profile,
    new_metadata,
    read_profile,
    write_profile,
)
from pals.core.node import Actuation, Node, Sample

PAPER_CAPS_W = PAPER_POWER_CAPS_W
"""The PALS paper's power-cap grid on A100 (W)."""
PAPER_BATCHES = PAPER_BATCH_CAPS
"""The PALS paper's batch-cap grid."""
STEADY_LIFETIMES = 1.0
"""Mean request lifetimes that must pass after a point starts before it is measured, and the shortest window."""
STEADY_MAX_S = 180.0
"""Bound on the wait for steady state and on the window's stretch, each. Units: s (node time)."""
LIFETIME_PROBE_S = 5.0
"""Counter deltas over this long estimate the mean request lifetime. Units: s (node time)."""
MAX_BATCH_CAP = 1024
"""Largest batch cap a grid may hold: vLLM's max_num_seqs on H100/H200 (the simulator is tested to it)."""


@dataclass(frozen=True)
class ProfileGrid:
    """The configurations to measure: every power cap with every batch cap.

    Attributes:
        power_caps_w: Per-GPU power caps. Units: W.
        batch_caps: Batch caps (max running sequences per engine replica).
    """

    power_caps_w: tuple[float, ...] = PAPER_CAPS_W
    batch_caps: tuple[int, ...] = PAPER_BATCHES

    def __post_init__(self) -> None:
        if not self.power_caps_w:
            raise ConfigError("ProfileGrid.power_caps_w is empty; pass at least one cap in W (e.g. --caps 150,400)")
        if not self.batch_caps:
            raise ConfigError("ProfileGrid.batch_caps is empty; pass at least one batch cap (e.g. --batches 1,64)")
        for cap in self.power_caps_w:
            if not (math.isfinite(cap) and cap > 0):
                raise ConfigError(f"ProfileGrid.power_caps_w holds {cap!r}; caps must be positive watts")
        for batch in self.batch_caps:
            if int(batch) != batch or batch < 1:
                raise ConfigError(f"ProfileGrid.batch_caps holds {batch!r}; batch caps must be integers >= 1")
            if batch > MAX_BATCH_CAP:
                raise ConfigError(f"batch cap {int(batch)} is above {MAX_BATCH_CAP}, the largest PALS profiles "
                                  f"(vLLM's max_num_seqs on H100/H200); pass batch caps of 1-{MAX_BATCH_CAP}")
        object.__setattr__(self, "power_caps_w", tuple(float(c) for c in self.power_caps_w))
        object.__setattr__(self, "batch_caps", tuple(int(b) for b in self.batch_caps))

    def points(self) -> list[tuple[float, int]]:
        """Points in measuring order: caps outer, batches inner."""
        return [(cap, batch) for cap in self.power_caps_w for batch in self.batch_caps]

    def __len__(self) -> int:
        return len(self.power_caps_w) * len(self.batch_caps)


def paper_grid_within(power_cap_min_w: float, power_cap_max_w: float, batch_cap_max: int) -> ProfileGrid:
    """The paper's grid (caps 150-400 W step 50, batches 1-64) clipped to a node's settable ranges.

    On GPUs whose range is not the A100's, the caps are 6 evenly spaced values from
    max(min cap, 37.5 % of max) to the max, the same shape as 150-400 W on a 400 W part.
    """
    caps = [c for c in PAPER_CAPS_W if power_cap_min_w <= c <= power_cap_max_w]
    if power_cap_max_w != 400.0 or len(caps) < 2:
        low = max(power_cap_min_w, 0.375 * power_cap_max_w)
        step = (power_cap_max_w - low) / 5.0
        caps = [round(low + i * step, 1) for i in range(6)]
    batches = [b for b in PAPER_BATCHES if b <= batch_cap_max] or [batch_cap_max]
    return ProfileGrid(tuple(caps), tuple(batches))


@dataclass(frozen=True)
class Window:
    """What one measurement window produced (before it becomes a profile row)."""

    throughput_tps: float
    prompt_throughput_tps: float
    gpu_power_total_w: float
    node_power_w: float | None
    window_s: float


def measure_window(node: Node, clock: Clock, window_s: float, sample_interval_s: float = 0.25) -> tuple[Window, Sample]:
    """Measure one window: counter deltas between a first and a last sample, gauges averaged.

    Returns:
        The window's figures and the last sample (for latency and workload gauges).
    """
    first = node.sample()
    start_s = clock.now_s()
    end_s = start_s + window_s
    node_powers_w: list[float] = []
    last = first
    next_s = start_s
    while True:
        next_s = min(next_s + sample_interval_s, end_s)
        clock.wait_until(next_s)
        last = node.sample()
        if last.node_power_w is not None:
            node_powers_w.append(float(last.node_power_w))
        if next_s >= end_s:
            break
    dt_s = last.time_s - first.time_s
    if not dt_s > 0:
        raise ProfileError(
            f"the node's sample clock did not advance over a {window_s:g} s window "
            f"({first.time_s} -> {last.time_s}); the node and the clock passed to run_profile must belong together"
        )
    window = Window(
        throughput_tps=(last.generated_tokens_total - first.generated_tokens_total) / dt_s,
        prompt_throughput_tps=(last.prompt_tokens_total - first.prompt_tokens_total) / dt_s,
        gpu_power_total_w=(last.gpu_energy_total_j - first.gpu_energy_total_j) / dt_s,
        node_power_w=(sum(node_powers_w) / len(node_powers_w)) if node_powers_w else None,
        window_s=dt_s,
    )
    return window, last


def build_row(
    *,
    model: str,
    gpu: str,
    num_gpus: int,
    tp: int,
    ep: int,
    power_cap_w: float,
    batch_cap: int,
    window: Window,
    last: Sample,
    workload: WorkloadDescriptor | None,
) -> dict[str, Any]:
    """One profile row from a measured window."""
    gpu_total_w = window.gpu_power_total_w
    node_w = window.node_power_w
    tpj_gpu = window.throughput_tps / gpu_total_w if gpu_total_w > 0 else math.nan
    tpj = window.throughput_tps / node_w if node_w else tpj_gpu
    if workload is not None:
        prompt_tokens = workload.mean_prompt_tokens
        output_tokens = workload.mean_output_tokens
        rate = workload.arrival_rate_rps
    else:
        # No descriptor (e.g. an external load generator): use what the node observed.
        prompt_tokens = last.mean_prompt_tokens
        output_tokens = last.mean_output_tokens
        rate = None

    def _nan(value: float | None) -> float:
        return math.nan if value is None else float(value)

    return {
        "model": model,
        "gpu": gpu,
        "num_gpus": num_gpus,
        "tp": tp,
        "ep": ep,
        "power_cap_w": float(power_cap_w),
        "batch_cap": int(batch_cap),
        "mean_prompt_tokens": _nan(prompt_tokens),
        "mean_output_tokens": _nan(output_tokens),
        "arrival_rate_rps": _nan(rate),
        "throughput_tps": window.throughput_tps,
        "prompt_throughput_tps": window.prompt_throughput_tps,
        "gpu_power_w": gpu_total_w / num_gpus,
        "gpu_power_total_w": gpu_total_w,
        "node_power_w": _nan(node_w),
        "tokens_per_joule": tpj,
        "tokens_per_joule_gpu": tpj_gpu,
        "ttft_p50_s": _nan(last.ttft.p50_s if last.ttft and last.ttft.count else None),
        "ttft_p99_s": _nan(last.ttft.p99_s if last.ttft and last.ttft.count else None),
        "tpot_p50_s": _nan(last.tpot.p50_s if last.tpot and last.tpot.count else None),
        "tpot_p99_s": _nan(last.tpot.p99_s if last.tpot and last.tpot.count else None),
        "window_s": window.window_s,
    }


def profile_on_fresh_nodes(
    make_node: Callable[[int, float, int], Any],
    points,
    warmup_s: float,
    window_s: float,
    out_path: str | os.PathLike,
    *,
    workload: WorkloadDescriptor | None = None,
    node_kind: str = "sim",
    metadata_extra: dict[str, Any] | None = None,
):
    """Measure each (power cap W, batch cap) point on its own fresh node; yield (cap, batch, profile).

    A simulator can start every point clean, so a backlog built at one point (a small batch under an
    open-loop load) never carries into the next; a real node drains instead (`run_profile`).
    `make_node(index, cap_w, batch)` returns a node with a `.clock`, started at that point. The
    profile at `out_path` is started afresh and grows by one row per point (the profile yielded).
    """
    path = Path(out_path)
    path.unlink(missing_ok=True)
    for index, (cap_w, batch) in enumerate(points):
        node = make_node(index, cap_w, batch)
        profile = run_profile(
            node,
            node.clock,
            ProfileGrid((float(cap_w),), (int(batch),)),
            warmup_s=warmup_s,
            window_s=window_s,
            out_path=path,
            resume=True,
            progress=False,
            workload=workload,
            node_kind=node_kind,
            metadata_extra=metadata_extra,
        )
        yield cap_w, batch, profile


def run_profile(
    node: Node,
    clock: Clock,
    grid: ProfileGrid,
    warmup_s: float,
    window_s: float,
    out_path: str | os.PathLike,
    resume: bool = True,
    progress: bool = True,
    *,
    workload: WorkloadDescriptor | None = None,
    node_kind: str = "sim",
    sample_interval_s: float = 0.25,
    metadata_extra: dict[str, Any] | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    drain_max_s: float | None = None,
    drain_waiting: int = 2,
    settle_max_s: float = 120.0,
    steady_lifetimes: float = STEADY_LIFETIMES, steady_max_s: float = STEADY_MAX_S,
) -> Profile:
    """Measure every grid point on `node` and write the profile to `out_path` as it goes.

    Args:
        node: Any `Node` (simulated or real).
        clock: The clock the node runs on (`SimNode.clock`, or a `WallClock`).
        grid: Power caps x batch caps to measure.
        warmup_s: Time to let the node settle after each change before measuring. Units: s.
        window_s: Measurement window per point. Units: s.
        out_path: Profile file, rewritten atomically after every point.
        resume: Keep points already in `out_path` and measure only the missing ones (False: replace it).
        progress: Show a tqdm progress bar on stderr.
        workload: The offered workload (recorded in each row and the metadata); None: what the node observes.
        node_kind: Recorded in the metadata ("sim", "vllm").
        sample_interval_s: How often the node is sampled inside a window (for node power). Units: s.
        metadata_extra: More metadata to record (seed, trace name, ...).
        on_point: Called with each new row after it is written (tests, live tables).
        drain_max_s: Longest wait for the queue to drain after applying a point. Units: s. None:
            60 s when `workload` has an arrival rate (open loop), else 0 (saturating load).
        drain_waiting: The queue counts as drained at this many waiting requests or fewer.
        settle_max_s: Longest wait for the running sequences to fall to a lowered batch cap. Units: s. 0: none.
        steady_lifetimes, steady_max_s: Wait for steady state (module docstring); 0 lifetimes: none. Units: -, s.

    Returns:
        The complete profile as written.

    Raises:
        ConfigError: a grid point is outside the node's settable ranges, or bad timings.
        ProfileError: `out_path` holds a profile of another deployment or workload.
    """
    timing = _check_timing(warmup_s, window_s, sample_interval_s, drain_max_s, drain_waiting, workload, settle_max_s,
                           steady_lifetimes, steady_max_s)
    constraints = node.constraints()
    _check_grid(grid, constraints)
    out = Path(out_path)
    metadata, rows = _start_profile(node_kind, constraints, workload, timing, metadata_extra, out, resume)
    done = {(float(r["power_cap_w"]), int(r["batch_cap"])) for r in rows}
    todo = [point for point in grid.points() if point not in done]

    original = node.sample()
    original_cap_w = original.gpu_power_cap_w[0] if original.gpu_power_cap_w else None
    original_batch = original.batch_cap

    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), disable=not progress, unit="point",
               desc=f"profile {constraints.model_name}", leave=True)
    try:
        for cap, batch in todo:
            bar.set_postfix_str(f"cap {cap:g} W, batch {batch}")
            row = _measure_point(node, clock, constraints, cap, batch, timing, workload)
            rows.append(row)
            write_profile(out, metadata, rows)
            bar.update(1)
            if on_point is not None:
                on_point(row)
    except BaseException:
        bar.close()
        try:
            _restore(node, constraints, original_cap_w, original_batch)
        except Exception as error:  # keep the original failure; say the node may be left changed
            warnings.warn(f"could not restore the node's original configuration: {error}", stacklevel=2)
        raise
    bar.close()
    _restore(node, constraints, original_cap_w, original_batch)
    if not rows:
        raise ProfileError(f"no points measured for {out}; pass a non-empty grid")
    if not todo:
        write_profile(out, metadata, rows)  # nothing new, but make sure the file is there and valid
    return read_profile(out)


@dataclass(frozen=True)
class _Timing:
    """How each point is measured (the checked timing arguments of `run_profile`)."""

    warmup_s: float
    """Settling time after applying a point (and draining). Units: s."""
    window_s: float
    """Measurement window. Units: s."""
    sample_interval_s: float
    """Sampling period inside a window. Units: s."""
    drain_max_s: float
    """Longest wait for the queue to drain after applying a point; 0 skips the drain. Units: s."""
    drain_waiting: int
    """The queue counts as drained at this many waiting requests or fewer."""
    settle_max_s: float
    """Longest wait for the running sequences to fall to a lowered batch cap; 0 skips it. Units: s."""
    steady_lifetimes: float = STEADY_LIFETIMES
    """Mean request lifetimes to let pass after the warm-up starts, and the shortest window; 0: none."""
    steady_max_s: float = STEADY_MAX_S
    """Bound on the wait for steady state and on the window's stretch, each. Units: s."""


def _check_timing(
    warmup_s: float,
    window_s: float,
    sample_interval_s: float,
    drain_max_s: float | None,
    drain_waiting: int,
    workload: WorkloadDescriptor | None,
    settle_max_s: float = 120.0,
    steady_lifetimes: float = STEADY_LIFETIMES,
    steady_max_s: float = STEADY_MAX_S,
) -> _Timing:
    """Validate `run_profile`'s timings and resolve the default drain bound."""
    for name, value in (("warmup_s", warmup_s), ("window_s", window_s), ("sample_interval_s", sample_interval_s),
                        ("settle_max_s", settle_max_s), ("steady_max_s", steady_max_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a non-negative number of seconds, got {value!r}")
    if drain_max_s is None:
        drain_max_s = 60.0 if workload is not None and workload.arrival_rate_rps is not None else 0.0
    if not (math.isfinite(drain_max_s) and drain_max_s >= 0):
        raise ConfigError(f"drain_max_s must be a non-negative number of seconds, got {drain_max_s!r}")
    if window_s <= 0 or sample_interval_s <= 0:
        raise ConfigError(f"window_s and sample_interval_s must be positive seconds, got {window_s!r}, {sample_interval_s!r}")
    if not (math.isfinite(steady_lifetimes) and steady_lifetimes >= 0):
        raise ConfigError(f"steady_lifetimes must be a non-negative number of request lifetimes, "
                          f"got {steady_lifetimes!r}")
    return _Timing(warmup_s, window_s, sample_interval_s, drain_max_s, drain_waiting, settle_max_s,
                   float(steady_lifetimes), float(steady_max_s))


def _check_grid(grid: ProfileGrid, constraints) -> None:
    """Every point must be settable on this node (and more than one cap needs cap permission)."""
    for cap, batch in grid.points():
        constraints.check(Actuation(power_cap_w=cap, batch_cap=batch))
    if not constraints.power_cap_settable and len(grid.power_caps_w) > 1:
        raise ConfigError(
            "this node cannot set power caps (no permission); profile one cap (--caps with one value) "
            "or run with permission to set GPU power limits"
        )


def _start_profile(
    node_kind: str,
    constraints,
    workload: WorkloadDescriptor | None,
    timing: _Timing,
    metadata_extra: dict[str, Any] | None,
    out: Path,
    resume: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metadata and rows to grow: new ones, or those already in `out` when resuming."""
    metadata = new_metadata(
        model=constraints.model_name,
        gpu=constraints.gpu_name,
        num_gpus=constraints.num_gpus,
        tp=constraints.tp,
        ep=constraints.ep,
        node=node_kind,
        workload=workload,
        warmup_s=float(timing.warmup_s),
        window_s=float(timing.window_s),
        steady_lifetimes=timing.steady_lifetimes,
        steady_max_s=float(timing.steady_max_s),
        **(metadata_extra or {}),
    )
    rows: list[dict[str, Any]] = []
    if resume and out.exists():
        existing = read_profile(out, expect_model=constraints.model_name)
        _check_resumable(existing, metadata, out)
        rows = list(existing.rows)
        metadata = dict(existing.metadata)  # keep the original creation time and settings
    return metadata, rows


def _measure_point(
    node: Node,
    clock: Clock,
    constraints,
    cap: float,
    batch: int,
    timing: _Timing,
    workload: WorkloadDescriptor | None,
) -> dict[str, Any]:
    """Apply one point, settle, drain, warm up, measure one window; return its profile row."""
    node.apply(Actuation(power_cap_w=cap if constraints.power_cap_settable else None, batch_cap=batch))
    if timing.settle_max_s > 0:
        settle_running(node, clock, batch * constraints.replicas, timing.settle_max_s)
    if timing.drain_max_s > 0:
        waited_s = drain_queue(node, clock, timing.drain_max_s, timing.drain_waiting)
        if 0 < waited_s < timing.drain_max_s - 1e-9:
            retire_running(node, clock, timing.drain_max_s)
    lifetime_s = warm_up_to_steady_state(node, clock, timing, workload)
    window_s = timing.window_s
    if lifetime_s is not None and math.isfinite(lifetime_s):
        window_s = max(window_s, min(timing.steady_lifetimes * lifetime_s, timing.steady_max_s))
    window, last = measure_window(node, clock, window_s, timing.sample_interval_s)
    return build_row(
        model=constraints.model_name,
        gpu=constraints.gpu_name,
        num_gpus=constraints.num_gpus,
        tp=constraints.tp,
        ep=constraints.ep,
        power_cap_w=cap,
        batch_cap=batch,
        window=window,
        last=last,
        workload=workload,
    )


def request_lifetime_s(first: Sample, last: Sample, mean_output_tokens: float | None,
                       mean_running: float | None = None) -> float | None:
    """The mean request lifetime between two samples by Little's law: sequences running / requests finishing per s.

    Requests finish at the generated tokens per second over `mean_output_tokens`; when that is None, at
    the finished-request counter's rate. `mean_running`: the sequences running on average between the
    samples (None: the two samples' mean).

    Returns:
        Units: s. None without time between the samples; 0 with nothing running; infinite while
        nothing was generated (or, without a mean output length, nothing finished).
    """
    dt_s = last.time_s - first.time_s
    if not dt_s > 0:
        return None
    running = 0.5 * (first.requests_running + last.requests_running) if mean_running is None else mean_running
    if running <= 0:
        return 0.0
    if mean_output_tokens is not None and mean_output_tokens > 0:
        finishing_per_s = (last.generated_tokens_total - first.generated_tokens_total) / dt_s / mean_output_tokens
    else:
        finishing_per_s = (last.requests_finished_total - first.requests_finished_total) / dt_s
    return running / finishing_per_s if finishing_per_s > 0 else math.inf


def warm_up_to_steady_state(node: Node, clock: Clock, timing: _Timing,
                            workload: WorkloadDescriptor | None) -> float | None:
    """Wait the warm-up, then until `timing.steady_lifetimes` mean request lifetimes have passed since it began.

    The lifetime is estimated every `LIFETIME_PROBE_S` from the counters since the warm-up's last
    `LIFETIME_PROBE_S` (one probe, so a warm-up longer than the lifetimes adds nothing), with the sequences
    running averaged over the probes: a time average, not a snapshot of one phase of the wave. The whole
    wait is at most the larger of the warm-up and `timing.steady_max_s`. Requests finish at the generated
    tokens over the workload's mean output length; without a workload, at the finished-request counter's
    rate (the mean output length the node observes is biased short while only the first, shortest
    requests have finished: it cut a 49 s lifetime to 39 s), which waits for a whole turnover; the
    lifetime returned for the window then uses the observed mean output length.

    Returns:
        The last lifetime estimate (None when unknown or not asked for). Units: s.
    """
    start_s = clock.now_s()
    warm_end_s = start_s + timing.warmup_s
    if timing.steady_lifetimes <= 0:
        clock.wait_until(warm_end_s)
        return None
    end_s = start_s + max(timing.warmup_s, timing.steady_max_s)
    probe_s = min(LIFETIME_PROBE_S, timing.warmup_s) if timing.warmup_s > 0 else LIFETIME_PROBE_S
    clock.wait_until(max(start_s, warm_end_s - probe_s))
    anchor = node.sample()
    running = [anchor.requests_running]
    while True:
        clock.wait_until(min(max(warm_end_s, clock.now_s() + probe_s), end_s))
        last = node.sample()
        running.append(last.requests_running)
        mean_output = workload.mean_output_tokens if workload is not None else None
        lifetime_s = request_lifetime_s(anchor, last, mean_output, sum(running) / len(running))
        now_s = clock.now_s()
        steady = lifetime_s is None or now_s - start_s >= timing.steady_lifetimes * lifetime_s - 1e-9
        if steady or now_s >= end_s - 1e-9:
            break
        probe_s = LIFETIME_PROBE_S
    if mean_output is None and lifetime_s is not None and last.mean_output_tokens:
        # After a turnover the observed mean output length is no longer biased short; the counter's rate,
        # zero until the first requests finish, overstates the lifetime.
        lifetime_s = request_lifetime_s(anchor, last, last.mean_output_tokens, sum(running) / len(running))
    return lifetime_s


def _wait_while(clock: Clock, busy: Callable[[], bool], max_s: float, poll_s: float) -> float:
    """Advance `clock` in `poll_s` steps while `busy()`, at most `max_s`; return the node time waited. Units: s."""
    start_s = clock.now_s()
    while busy():
        now_s = clock.now_s()
        if now_s - start_s >= max_s - 1e-9:
            break
        clock.wait_until(min(now_s + poll_s, start_s + max_s))
    return clock.now_s() - start_s


def settle_running(node: Node, clock: Clock, running: int, max_s: float, poll_s: float = 0.5) -> float:
    """Wait until the node runs `running` sequences or fewer, at most `max_s` of node time.

    After a batch-cap decrease the sequences already running are not preempted, so the node runs
    the old, larger batch down first; a measurement must not start before that is over.

    Returns:
        The node time waited. Units: s.
    """
    return _wait_while(clock, lambda: node.sample().requests_running > running, max_s, poll_s)


def retire_running(node: Node, clock: Clock, max_s: float, poll_s: float = 0.5) -> float:
    """Wait until as many requests have finished as were running now, at most `max_s` of node time.

    Right after a backlog has drained the batch is still full of requests admitted from it, more
    than the offered load keeps running; until they are done the node delivers more than the
    offered load (16 % more over a 20 s window in tests/control/test_load_aware.py). Requests are
    admitted first come, first served, so once that many have finished the backlog's are
    (approximately: a short new request may finish before a long old one).

    Returns:
        The node time waited. Units: s.
    """
    first = node.sample()
    done_at = first.requests_finished_total + first.requests_running
    return _wait_while(clock, lambda: node.sample().requests_finished_total < done_at, max_s, poll_s)


def drain_queue(node: Node, clock: Clock, max_s: float, waiting: int = 2, poll_s: float = 1.0) -> float:
    """Wait until the node's queue holds `waiting` requests or fewer, at most `max_s` of node time.

    Returns:
        The node time waited. Units: s.
    """
    return _wait_while(clock, lambda: node.sample().requests_waiting > waiting, max_s, poll_s)


def _check_resumable(existing: Profile, metadata: dict[str, Any], out: Path) -> None:
    for key in ("gpu", "num_gpus", "tp", "ep"):
        if existing.metadata.get(key) != metadata.get(key):
            raise ProfileError(
                f"{out} holds a profile with {key}={existing.metadata.get(key)!r}, this run has {metadata.get(key)!r}; "
                "pass another --out or delete the file to start over"
            )
    if existing.metadata.get("workload") != metadata.get("workload"):
        raise ProfileError(
            f"{out} was profiled under another workload ({existing.metadata.get('workload')}); "
            "pass another --out or delete the file to start over"
        )


def _restore(node: Node, constraints, cap_w: float | None, batch: int) -> None:
    """Put the node back as we found it; clamp in case it started outside the ranges."""
    if cap_w is not None and constraints.power_cap_settable:
        cap_w = min(max(cap_w, constraints.power_cap_min_w), constraints.power_cap_max_w)
    else:
        cap_w = None
    batch = min(max(int(batch), constraints.batch_cap_min), constraints.batch_cap_max)
    node.apply(Actuation(power_cap_w=cap_w, batch_cap=batch))
