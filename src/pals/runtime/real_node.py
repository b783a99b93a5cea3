"""A controller on a real vLLM node: what `pals serve` (which starts vLLM) and `pals run --node vllm`
(which attaches to a vLLM server already running) share.

`RealControl` holds one such controller from the first signal handler to the last restore:

- every signal of `STOP_SIGNALS` sets its `stop` event (the loop ends within one interval);
- a `PowerLimitGuard` owns the GPUs: each GPU's lock, and its original limit saved before the first
  write (`pals restore` reads it after a crash);
- `start` builds the `VllmNode` and the controller (`pals.runtime.builder.build_controller`);
- `close` stops the endpoint, closes the decision log, puts the batch cap back to max_num_seqs and
  restores the GPUs' limits, then runs the caller's own steps (serve: stop vLLM), each step even when
  an earlier one failed, and puts the previous signal handlers back.

The attach checks (`scheduler_report`) make sure the server was started with PALS's scheduler on
the given cap channel before anything is written to it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from pals.errors import ConfigError

SCHEDULER_CLS = "pals.integrations.vllm_scheduler.PalsScheduler"
"""vLLM's --scheduler-cls for PALS's batch cap."""
SCRAPE_DEADLINE_MAX_S = 2.0
"""The longest `VllmNode.sample()` waits for /metrics; never more than half an interval either."""

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU")
    if hasattr(signal, name)
)
"""Signals whose default action ends the process: each stops the controller the same way (restore the
GPU limits and the batch cap, then the caller's steps). SIGHUP is a closed terminal or a dropped ssh session."""


def install_stop_handlers(stop: threading.Event, received: list[str]) -> dict:
    """Make every signal of STOP_SIGNALS set `stop` (its name appended to `received`); return the
    previous handlers. A signal ignored when this runs stays ignored: the parent chose that
    (`nohup` ignores SIGHUP), and the process would not have stopped on it."""

    def handler(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        # Set from another thread: the handler runs between two bytecodes of the main thread, which
        # may be holding the event's own lock inside `Event.wait` (a self-deadlock).
        threading.Thread(target=stop.set, name="pals-stop", daemon=True).start()

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, handler)
    return previous


def say(line: str) -> None:
    """One status line on stderr; never raises (after SIGHUP the terminal may be gone, and a failed
    write must not cut the shutdown short)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def grid_batch_caps(predictor) -> list[int]:
    """The batch caps of the predictor's grid (empty without a predictor)."""
    return [int(b) for b in getattr(predictor, "batches_", [])] if predictor is not None else []


def check_batch_ceiling(predictor, max_num_seqs: int, where: str = "--max-num-seqs") -> None:
    """Refuse a grid whose largest batch cap the engine cannot run (one line naming the fix)."""
    batches = grid_batch_caps(predictor)
    if batches and max(batches) > max_num_seqs:
        raise ConfigError(f"{where} {max_num_seqs} is below the grid's largest batch cap {max(batches)}; "
                          f"start vLLM with --max-num-seqs {max(batches)} or profile a grid within {max_num_seqs}")


def scheduler_report(channel: str):
    """The report PalsScheduler wrote at start-up on `channel` (its max_num_seqs), checked for an attach.

    Raises:
        ConfigError: the channel's directory does not exist, is not private, or holds no report (the
            server was not started with PALS's scheduler and this channel); one line naming the fix.
    """
    from pals.integrations.cap_channel import APPLIED_SUFFIX, ENV_VAR, KIND_APPLIED, check_channel_dir, read_record

    directory = os.path.dirname(os.path.abspath(channel))
    if not os.path.isdir(directory):
        raise ConfigError(f"--cap-channel {channel}: its directory {directory} does not exist; give the "
                          f"{ENV_VAR} path vLLM was started with")
    check_channel_dir(directory)
    report = read_record(channel + APPLIED_SUFFIX)
    if report is None or report.kind != KIND_APPLIED or report.max_cap < 1:
        raise ConfigError(f"no report from PalsScheduler at {channel}{APPLIED_SUFFIX}: start vLLM with --scheduler-cls "
                          f"{SCHEDULER_CLS} and {ENV_VAR}={channel}, or give --cap-channel the path it was started with")
    return report


@dataclass(frozen=True)
class EngineLink:
    """How the controller reaches one vLLM server."""

    url: str
    """The server's base URL, e.g. http://127.0.0.1:8000."""
    cap_channel: str
    """The batch-cap channel file its PalsScheduler polls ($PALS_CAP_CHANNEL of the server)."""
    batch_cap_max: int
    """The engine's max_num_seqs: the largest batch cap control may set."""
    tp: int = 1
    """Tensor-parallel degree the server runs with."""


class RealControl:
    """One controller on a real vLLM node, from the first signal handler to the last restore.

    Args:
        gpus: the GPUs it controls (a `GpuBackend`, e.g. `pals.node.gpu_select.SelectedGpus`).
        who: the command, at the start of every status line ("pals serve", "pals run").

    Raises:
        ConfigError: another live PALS process owns one of the GPUs (the signal handlers are put back).
    """

    def __init__(self, gpus, who: str) -> None:
        from pals.node.hwstate import PowerLimitGuard

        self.who = who
        self.gpus = gpus
        self.stop = threading.Event()
        self.received: list[str] = []
        self._previous = install_stop_handlers(self.stop, self.received)
        try:
            self.guard = PowerLimitGuard(gpus, handle_signals=False)
        except BaseException:
            self._restore_handlers()
            raise
        self.node = None
        self.controller = None

    def start(self, link: EngineLink, settings, predictor=None, latency_model=None, node_name: str | None = None):
        """Build the node and the controller (its endpoint listening, when asked for); return the controller.
        `node_name` is the `node` label of its metrics (None: the host name)."""
        from pals.node.vllm_node import VllmNode
        from pals.runtime.builder import build_controller

        # The engine's counters and queues come from the scheduler's record; /metrics (latency
        # histograms) is never waited for longer than half an interval.
        self.node = VllmNode(link.url, self.gpus, link.cap_channel, batch_cap_max=link.batch_cap_max, guard=self.guard,
                             tp=link.tp, scrape_deadline_s=min(SCRAPE_DEADLINE_MAX_S, 0.5 * settings.interval_s))
        # Node power (budgets of kind "node") from the predictor's fitted line, as `pals run` does.
        self.controller = build_controller(self.node, settings, predictor=predictor, latency_model=latency_model)
        if node_name is not None:
            self.controller.loop.metrics.set_node(node_name)
        c = self.node.constraints()
        endpoint = "off" if self.controller.endpoint is None else self.controller.endpoint.url
        say(f"{self.who}: controller on; endpoint {endpoint}; GPUs: {c.num_gpus} x {c.gpu_name}")
        return self.controller

    def run(self, duration_s: float | None = None) -> None:
        """Run the loop until `duration_s` passes (None: no limit) or a stop signal arrives."""
        self.controller.run(duration_s=duration_s, stop=self.stop)

    def close(self, *after: tuple[str, Callable[[], object] | None]) -> list[str]:
        """Tear down in order (endpoint, decision log, batch cap and GPU limits, then `after`'s
        (what, step) pairs); every step runs even when one before it failed. Returns the failures."""
        controller, node = self.controller, self.node
        errors = []
        for what, fn in (
            ("endpoint", controller.endpoint.stop if controller and controller.endpoint else None),
            ("decision log", controller.loop.close if controller else None),
            ("batch cap and GPU limits", node.close if node else self.guard.close),
            *after,
        ):
            if fn is None:
                continue
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - every cleanup step runs
                errors.append(f"{what}: {exc}")
        self._restore_handlers()
        return errors

    def farewell(self, errors: list[str], done: str) -> str:
        """The last status line: which signal stopped it, and `done` or the cleanup failures."""
        why = f" on {self.received[0]}" if self.received else ""
        if errors:
            return f"{self.who}: stopped{why} with cleanup errors: {'; '.join(errors)}"
        return f"{self.who}: stopped{why}; {done}"

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
