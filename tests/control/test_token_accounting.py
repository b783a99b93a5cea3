"""Token accounting: the controller's token total is the engine's counter, whatever the samples' ages.

The real node (`VllmNode`) dates most samples when vLLM read its counters (`age_s` 0), but a
scrape that misses its deadline is bridged with the last engine data (counters unchanged,
`age_s` > 0), and one that finishes after a later sample was taken is placed with its age
(`age_s` > 0, counters moved). Tokens per joule, the headline figure, is only right if the
intervals' token counts add up to the counter's own delta in every such pattern.

`observe` rates the token delta over the counters' own span (`counter_dt_s`, from `age_s`) and
then multiplies that rate by the interval's length (`generated_tokens`), so when ages vary the
intervals no longer add up to the counter (a bridged sample counts 0 and the next interval
rates its tokens over twice its length: they are lost). On `pals serve` with the real `openai`
client this lost 20 % of 19,200 tokens.

The accounting lives in `pals.control.types.observe` (and the consumers that multiply the rate back by
the interval): count the counter's delta itself,

    generated_tokens=generated,                    # not generated / counter_dt_s * dt_s
    throughput_tps=generated / counter_dt_s,       # the rate over the counters' own span, as now

and have `IntervalSample` log `generated_tokens`, `_Totals.add` (summary) and
`ControllerMetrics.update` (`pals_generated_tokens_total`) sum it instead of
`throughput_tps * interval_s`. That is what they do now; these tests hold them to it.
"""

from __future__ import annotations

import json
import math

import pytest

from pals.core.node import Actuation, Constraints, Sample

INTERVAL_S = 0.5


def _tokens_at(t_s: float) -> float:
    """The engine's cumulative token counter: a rate that changes over time (bursty load)."""
    return 1000.0 * t_s + 400.0 * math.sin(t_s) + 150.0 * math.sin(3.1 * t_s)


def _samples(n: int) -> list[Sample]:
    """Samples as VllmNode produces them: aligned, bridged (old counters, aged) and late (moved, aged)."""
    out = []
    last_counter_t = 0.0
    for k in range(n):
        t_s = INTERVAL_S * k
        kind = ("aligned", "bridged", "late", "aligned", "late", "bridged", "bridged", "aligned")[k % 8]
        if k == 0 or k == n - 1:
            kind = "aligned"
        if kind == "aligned":
            counter_t, age_s = t_s, 0.0
        elif kind == "bridged":
            counter_t, age_s = last_counter_t, t_s - last_counter_t
        else:
            counter_t = t_s - 0.35
            age_s = 0.35
        last_counter_t = counter_t
        out.append(Sample(
            time_s=t_s, gpu_power_w=(300.0,), gpu_energy_j_total=(300.0 * t_s,), gpu_power_cap_w=(400.0,),
            batch_cap=8, generated_tokens_total=_tokens_at(counter_t), prompt_tokens_total=0.0,
            requests_running=8, requests_waiting=4, requests_finished_total=0, age_s=age_s,
        ))
    return out


def test_interval_tokens_add_up_to_the_counter():
    from pals.control.types import observe

    samples = _samples(41)
    total = sum(observe(a, b).generated_tokens for a, b in zip(samples, samples[1:]))
    counter_delta = samples[-1].generated_tokens_total - samples[0].generated_tokens_total
    assert total == pytest.approx(counter_delta, rel=1e-9)


class _ReplayNode:
    """A node that replays prepared samples (no GPU, no engine: the samples are the test's input)."""

    def __init__(self, samples: list[Sample], clock) -> None:
        self.samples = samples
        self.clock = clock

    def constraints(self) -> Constraints:
        return Constraints(num_gpus=1, power_cap_min_w=100.0, power_cap_max_w=400.0, batch_cap_max=8)

    def sample(self) -> Sample:
        index = min(len(self.samples) - 1, round(self.clock.now_s() / INTERVAL_S))
        return self.samples[index]

    def apply(self, actuation: Actuation) -> None:
        pass


class _StepClock:
    def __init__(self) -> None:
        self.t_s = 0.0

    def now_s(self) -> float:
        return self.t_s

    def wait_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


def test_the_loop_log_summary_and_metrics_count_the_counter(tmp_path):
    from pals.control.loop import ControlLoop
    from pals.control.policies.baseline import Baseline

    clock = _StepClock()
    samples = _samples(41)
    log_path = tmp_path / "decisions.jsonl"
    loop = ControlLoop(_ReplayNode(samples, clock), Baseline(), clock, interval_s=INTERVAL_S, decision_log=str(log_path))
    loop.run(duration_s=INTERVAL_S * (len(samples) - 1))
    loop.close()
    counter_delta = samples[-1].generated_tokens_total - samples[0].generated_tokens_total
    logged = 0.0
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        s = rec.get("sample")
        if s:
            logged += s["generated_tokens"] if "generated_tokens" in s else s["throughput_tps"] * rec["interval_s"]
    assert logged == pytest.approx(counter_delta, rel=1e-3)
    assert loop.summary()["generated_tokens"] == pytest.approx(counter_delta, rel=1e-3)
    exposition = loop.metrics.exposition().decode()
    metric = [float(x.split()[1]) for x in exposition.splitlines() if x.startswith("pals_generated_tokens_total")]
    assert metric and metric[0] == pytest.approx(counter_delta, rel=1e-3)
