"""Assembly: the one home for putting a running system together.

- `deployment`: `Deployment`, the static node (model, GPU, GPU count, TP, EP, max batch cap).
- `load`: `LoadSpec`, the offered load and its length distribution; `make_workload`,
  `saturating_equivalent`.
- `predictors`: the predictor from `--predictor` / `--profile` (model-checked), or profiled on the
  simulated node and fitted on the fly (cached); the node-power line a loop uses.
- `truth`: `GroundTruth`, the simulator's ground truth for the Oracle.
- `builder`: node + predictor + policy + loop + node-power line + endpoint (`build_controller`).
- `scenario`: `run_scenario`, one policy over one load on a fresh simulated node.
- `profiling`: a real vLLM node with a load generator, for `pals profile --node vllm`.
- `cache`: where built profiles, predictors and ground truth are kept.

Layer: above `control`, `model`, `node`, `sim` and `loadgen`; below `cli` and `experiments`.
Nothing here reads parsed command-line flags: the CLI converts them into these typed values.
"""
