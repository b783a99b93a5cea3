"""The ground floor: contracts every other layer imports and that import no other layer.

- `node`: the `Node` protocol and its values (`Constraints`, `Sample`, `Actuation`).
- `clock`: the `Clock` protocol, `WallClock` (the simulator brings its own).
- `power`: the node-power line P_node = alpha x sum(P_gpu) + beta (`NodePowerModel`).
- `workload`: `WorkloadDescriptor`, what a predictor may know of a workload.
- `paper`: the PALS paper's runtime grid and node, the defaults everywhere else.
- `window`: one trailing window over control intervals (QoS, power, demand, bursts).
- `io`: atomic writes and a NaN-safe JSON encoder.

Only `pals.errors` and `pals.units` (and the standard library, numpy) may be imported here.
"""
