"""The characterization: the PALS paper's Figure 1 and 3 shapes beside the simulator's.

One implementation, used by `pals sweep --report` and by the `characterize` experiment:

1. **Measure** (`measure.characterize`) on the simulated node through the profiler, one fresh
   node per (cap, batch) point, at saturation and at a fixed offered load of `LOAD_FACTOR` x
   the model's batch-1 capacity; at saturation also with one mechanism switch off at a time.
2. **Compare** (`compare`): tokens/J against cap (best cap, loss at the largest cap), the
   batch-64 / batch-1 ratio, the 32 -> 64 gain and the Fig 3 frontier peak ratio, each at both
   loads, against the paper's statements, with the mechanism that decides each shape.
3. **Write** (`report.write_report`) a Markdown report with PNGs (`figures`).

Modules: `settings` (the paper's numbers, the grid and timing), `results` (the measured records),
`measure`, `compare`, `figures`, `report`, and `sweep_report` (one sweep's short summary).
"""

from pals.experiments.characterization.compare import bottom_line, comparison_rows, paper_best_cap_w
from pals.experiments.characterization.measure import characterize, fits_node, measure_sweep
from pals.experiments.characterization.report import write_report
from pals.experiments.characterization.results import CharacterizationResult, ModelResult, Point, Sweep
from pals.experiments.characterization.settings import (
    ABLATIONS,
    FIG1A_MODELS,
    LOAD_FACTOR,
    PAPER_BATCH_RATIO,
    PAPER_BEST_CAP_W,
    PAPER_FIG2_BOUND,
    PAPER_FRONTIER_RATIO,
    PAPER_GAIN_32_64,
    PAPER_MODEL_TP,
    PAPER_TP_FRONTIER_GAIN,
    SW_ONLY_BUDGET_CAP_W,
    CharacterizationSettings,
)
from pals.experiments.characterization.sweep_report import write_characterization_report

__all__ = [
    "ABLATIONS",
    "FIG1A_MODELS",
    "LOAD_FACTOR",
    "PAPER_BATCH_RATIO",
    "PAPER_BEST_CAP_W",
    "PAPER_FIG2_BOUND",
    "PAPER_FRONTIER_RATIO",
    "PAPER_GAIN_32_64",
    "PAPER_MODEL_TP",
    "PAPER_TP_FRONTIER_GAIN",
    "SW_ONLY_BUDGET_CAP_W",
    "CharacterizationResult",
    "CharacterizationSettings",
    "ModelResult",
    "Point",
    "Sweep",
    "bottom_line",
    "characterize",
    "comparison_rows",
    "fits_node",
    "measure_sweep",
    "paper_best_cap_w",
    "write_characterization_report",
    "write_report",
]
