"""The closed-loop runtime: one decision per control interval.

- `loop.ControlLoop`: sample -> decide -> apply -> wait, every `interval_s`, over any `Node`.
- `types`: what flows through one interval (`Observation`, `DecisionContext`, `Decision`).
- `policies`: `Baseline`, `AdaptiveBatch`, `AdaptiveCap`, `Pals` and `Oracle` behind one `Policy`
  interface, registered by name (`make_policy(name, ...)`); the model-guided ones are built from
  `policies.config`, `policies.estimators`, `policies.selection`, `pid.PID` and the budget guard.
- `budget`: power budget, budget schedule and throughput target; `qos` and `window`: the
  trailing-window QoS test and mean power.
- `decision_log`, `metrics`, `endpoint`: what the outside world sees (JSON lines, Prometheus,
  HTTP).
- `summary`: run figures (tokens/J, QoS violations, power tracking) from the decision records.

Wiring a loop to a node, a predictor and a load lives one layer up, in `pals.runtime`.
"""
