"""Offline power-performance model: profiles, the profiler, the predictor.

- `profile`: the profile file format (one schema, validated on read, atomic writes).
- `profiler`: measures a grid of (power cap, batch cap) points through the `Node` protocol.
- `predictor`: random-forest throughput and power model that scores candidate configurations.
- `syspower`: fits node (wall) power from GPU power, P_node = alpha * sum(P_gpu) + beta.
- `plots`: the characterization figures (tokens/J vs cap and batch, Pareto frontiers).

Heavy dependencies (scikit-learn, matplotlib) are imported inside the functions that need them.
"""
