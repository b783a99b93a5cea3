"""The closed-loop runtime: one decision per control interval.

Layers (imports point one way, from top to bottom):

- `loop.ControlLoop`: sample -> decide -> apply -> wait, every `interval_s`, over any `Node`.
- `policies`: Baseline, AdaptiveBatch, AdaptiveCap, PALS, Oracle behind one `Policy` interface
  (`make_policy(name, ...)`); `pid.PID` and `budget` (power budget, schedule, throughput target)
  are their parts.
- `decision_log`, `metrics`, `endpoint`: what the outside world sees (JSON lines, Prometheus,
  HTTP).
- `summary`: run figures (tokens/J, QoS violations, power tracking) from the decision records.

Wiring a loop to a node, a predictor and a load lives one layer up, in `pals.runtime`.
"""
