"""Assembly: the one home for putting a running system together.

- `deployment`: `Deployment`, the static node (model, GPU, GPU count, TP, EP, max batch cap).
- `load`: `LoadSpec`, the offered load and its length distribution; `make_workload`,
  `saturating_equivalent`.
- `predictors`: the predictor from `--predictor` / `--profile` (model-checked), or profiled on the
  simulated node and fitted on the fly (cached); the node-power line a loop uses.
- `truth`: `GroundTruth`, configurations measured at saturation on a noise-free node (capacities,
  the node's maximum throughput).
- `delivered`: `DeliveredTruth`, the dynamic Oracle's truth: every configuration held over a run's
  own request stream, read as the loop reads a run.
- `hindsight`: the hindsight oracle: every fixed configuration of the grid run as the static policy
  on the same stream; the best that meets explicit criteria (`MeetCriteria`), and its whole table.
- `builder`: node + predictor + policy + loop + node-power line + endpoint (`build_controller`).
- `scenario`: `run_scenario`, one policy over one load on a fresh simulated node (the Oracle's truth
  built for that run when not given).
- `profiling`: a real vLLM node with a load generator, for `pals profile --node vllm`.
- `cache`: where built profiles, predictors and ground truth are kept.

Layer: above `control`, `model`, `node`, `sim` and `loadgen`; below `cli` and `experiments`.
Nothing here reads parsed command-line flags: the CLI converts them into these typed values.
"""
