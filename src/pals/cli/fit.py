"""`pals fit`: train the power-performance predictor from a profile and report its held-out error."""

from __future__ import annotations

import json
import sys

from pals.cli._common import add_command, positive_int

DESCRIPTION = """\
Train the random-forest throughput and power predictor from a profile, save it,
and report its error on held-out configurations (k-fold by configuration, fixed
seed): MAPE of throughput and of GPU power, feature importances (permutation,
shares summing to 1: the mean of both targets, and per target; throughput
depends most on the batch cap, GPU power on the power cap where the caps bind),
and the node-power line P_node = alpha*sum(P_gpu) + beta when the profile has
measured node power.

Examples:
  pals fit mixtral.csv --out mixtral.model
  pals fit mixtral.csv --out mixtral.model --json
"""


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "fit", "train the predictor from a profile and report held-out error", DESCRIPTION, run)
    parser.add_argument("profile", help="profile CSV written by `pals profile` or `pals sweep`")
    parser.add_argument("--out", required=True, metavar="MODEL", help="predictor file to write (a .json copy of its metadata goes beside it)")
    parser.add_argument("--json", action="store_true", help="print the evaluation as one JSON object")
    parser.add_argument("--model", default=None, metavar="NAME", help="refuse the profile unless it is of this model")
    parser.add_argument("--k", type=positive_int, default=5, help="cross-validation folds, by configuration (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the folds and forests (default: 0)")
    parser.add_argument("--n-estimators", type=positive_int, default=100, metavar="N", help="trees per forest (default: 100)")


def run(args) -> int:
    from pals.errors import ConfigError
    from pals.model.predictor import PowerPerfPredictor, evaluate
    from pals.model.profile import read_profile

    if args.k < 2:
        raise ConfigError(f"--k must be at least 2 folds, got {args.k}")
    profile = read_profile(args.profile, expect_model=args.model)
    report = evaluate(profile, k=args.k, random_state=args.seed, n_estimators=args.n_estimators)
    predictor = PowerPerfPredictor(n_estimators=args.n_estimators, random_state=args.seed).fit(profile)
    predictor.save(args.out)
    result = report.to_dict()
    result.update(model=profile.model, rows=len(profile), out=str(args.out))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{profile.model} on {profile.num_gpus}x {profile.gpu}, TP {profile.tp}: "
              f"{len(profile)} rows, {report.n_configurations} configurations, {report.k}-fold by configuration")
        print(f"held-out MAPE throughput: {report.mape_throughput_pct:.2f} %")
        print(f"held-out MAPE power:      {report.mape_power_pct:.2f} %")
        by_target = report.feature_importance_by_target
        print(f"feature importance (permutation, share): {'both':>6} {'tput':>6} {'power':>6}")
        for name, share in sorted(report.feature_importance.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<38} {share:>6.3f} {by_target['throughput_tps'][name]:>6.3f} "
                  f"{by_target['gpu_power_total_w'][name]:>6.3f}")
        sp = report.syspower
        if sp.source == "fitted":
            print(f"node power: P_node = {sp.alpha:.3f} * sum(P_gpu) + {sp.beta_w:.1f} W "
                  f"(R^2 {sp.r2:.3f}, MAE {sp.mae_w:.1f} W, {sp.n_rows} rows)")
        else:
            print(f"node power: no measured node power in the profile; using the paper's "
                  f"{sp.alpha:g} * sum(P_gpu) + {sp.beta_w:g} W")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
