"""The engine's true queues and KV-cache use, published by `PalsScheduler` for the controller.

vLLM's own gauges (`vllm:num_requests_running`, `..._waiting`, `kv_cache_usage_perc`) read 0
in most scrapes of a saturated server while requests run and wait (they are sampled from the
logging path, not from the scheduler). The scheduler itself sees the real queues at every step,
so `PalsScheduler` publishes them here, at most every `min_interval_s` (50 ms by default, the cap
channel's read cadence), and at once when the engine goes idle or wakes up, so an idle engine's
last record says so.

The record is one small fixed-size binary file next to the cap channel (`<channel>.state`, same
directory), replaced atomically (`pals.core.io.atomic_write_bytes`: a temporary file, then a
rename), versioned and CRC-32 checked like the channel's records: a reader sees the old record or
the new one, and ignores a torn, corrupt or foreign one. Each record carries a sequence number,
the publishing process's id, its wall time and its monotonic time (CLOCK_MONOTONIC is one clock
for every process of a Linux host, so the reader computes the record's age directly; the channel
is a local file, so both ends are on one host).

Standard library and `pals.core.io` only: vLLM's engine-core process imports this module.
"""

from __future__ import annotations

import math
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from pals.core.io import atomic_write_bytes
from pals.integrations.cap_channel import read_record_file

STATE_SUFFIX = ".state"
"""The state record sits next to the cap channel's command file, with this suffix."""

_MAGIC = b"PALQ"
_FORMAT_VERSION = 1
# magic, format, seq, pid, wall_time_s, monotonic_s, running, waiting, kv_usage, batch_limit,
# max_num_seqs, steps, generated_tokens_total, prompt_tokens_total, finished_total, dp_rank, dp_size
# | crc32.
_BODY = struct.Struct("<4sHQqddqqdqqQQQQHH")
_CRC = struct.Struct("<I")
RECORD_SIZE_BYTES = _BODY.size + _CRC.size
_FILE_MODE = 0o644


@dataclass(frozen=True)
class EngineState:
    """One state record: what the scheduler saw at the end of one of its steps."""

    seq: int
    """Sequence number, from 1, per publishing process."""
    pid: int
    """Process id of the publisher (vLLM's engine-core process)."""
    wall_time_s: float
    """`time.time()` when published. Units: s."""
    monotonic_s: float
    """`time.monotonic()` of the publisher when published (one clock per host). Units: s."""
    running: int
    """Requests in the running queue."""
    waiting: int
    """Requests waiting for admission."""
    kv_cache_usage: float | None
    """Fraction of KV-cache blocks in use, 0-1; None when the scheduler could not read it."""
    batch_limit: int
    """The admission limit the scheduler set on its last step."""
    max_num_seqs: int
    """The engine's --max-num-seqs."""
    steps: int
    """Scheduler steps so far in the publishing process."""
    generated_tokens_total: int = 0
    """Output tokens the engine has emitted since the publisher started: the new token ids of
    every output it handed to vLLM's front end, which is what `vllm:generation_tokens` counts."""
    prompt_tokens_total: int = 0
    """Prompt tokens of the requests whose prefill finished (vLLM's `vllm:prompt_tokens`)."""
    finished_total: int = 0
    """Requests finished other than by abort or error (vLLM's `vllm:request_success` minus those)."""
    dp_rank: int = 0
    """Data-parallel rank of this engine (its own record file when above 0)."""
    dp_size: int = 1
    """Data-parallel engines in the deployment (each publishes its own record)."""

    @property
    def idle(self) -> bool:
        """Nothing running and nothing waiting: no step runs until work arrives."""
        return self.running == 0 and self.waiting == 0


def encode_state(state: EngineState) -> bytes:
    """Pack `state` into RECORD_SIZE_BYTES bytes, CRC-32 last."""
    kv = math.nan if state.kv_cache_usage is None else float(state.kv_cache_usage)
    body = _BODY.pack(
        _MAGIC, _FORMAT_VERSION, state.seq, state.pid, state.wall_time_s, state.monotonic_s,
        state.running, state.waiting, kv, state.batch_limit, state.max_num_seqs, state.steps,
        state.generated_tokens_total, state.prompt_tokens_total, state.finished_total, state.dp_rank, state.dp_size,
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_state(data: bytes) -> EngineState | None:
    """Unpack one record, or None if it is torn, corrupt, of another format or implausible."""
    if len(data) != RECORD_SIZE_BYTES:
        return None
    body, crc = data[: _BODY.size], data[_BODY.size :]
    if _CRC.unpack(crc)[0] != zlib.crc32(body):
        return None
    (magic, fmt, seq, pid, wall_s, mono_s, running, waiting, kv, limit, max_seqs, steps, generated, prompt, finished,
     dp_rank, dp_size) = _BODY.unpack(body)
    if magic != _MAGIC or fmt != _FORMAT_VERSION:
        return None
    if seq < 1 or pid < 1 or running < 0 or waiting < 0 or not (math.isfinite(wall_s) and math.isfinite(mono_s)):
        return None
    if dp_size < 1 or dp_rank >= dp_size:
        return None
    kv_usage = kv if math.isfinite(kv) and 0.0 <= kv <= 1.0 else None
    return EngineState(seq, pid, wall_s, mono_s, running, waiting, kv_usage, limit, max_seqs, steps, generated, prompt,
                       finished, dp_rank, dp_size)


def state_path_for(channel_path: str | os.PathLike, dp_rank: int = 0) -> str:
    """The state record of the cap channel at `channel_path` (data-parallel rank > 0: its own file)."""
    path = os.fspath(channel_path) + STATE_SUFFIX
    return path if dp_rank == 0 else f"{path}.{int(dp_rank)}"


class StatePublisher:
    """The scheduler's end: counts the engine's outputs and publishes `EngineState` records, rate-limited.

    Args:
        path: The state file (`state_path_for(channel, dp_rank)`); its directory must exist.
        min_interval_s: At most one record per this long, except when the engine goes idle or
            wakes up (always published, so an idle engine's record says it is idle).
        dp_rank, dp_size: This engine's data-parallel rank and the number of engines.
        clock: Monotonic time source (tests inject one); its value is the record's `monotonic_s`.
    """

    def __init__(self, path: str | os.PathLike, min_interval_s: float = 0.05, dp_rank: int = 0, dp_size: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not min_interval_s >= 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} is not within 0-{dp_size - 1}")
        self.path = os.fspath(path)
        self.min_interval_s = float(min_interval_s)
        self.dp_rank, self.dp_size = int(dp_rank), int(dp_size)
        self._clock = clock
        self._pid = os.getpid()
        self.seq = 0
        self.steps = 0
        self.generated_tokens_total = 0
        self.prompt_tokens_total = 0
        self.finished_total = 0
        self._next_s = -math.inf
        self._last: tuple[int, int] | None = None

    def step(self) -> None:
        """Count one scheduler step (reported in the next record)."""
        self.steps += 1

    def count_outputs(self, generated_tokens: int, prompt_tokens: int = 0, finished: int = 0) -> None:
        """Add what one batch of engine outputs carried (reported in the next record)."""
        self.generated_tokens_total += int(generated_tokens)
        self.prompt_tokens_total += int(prompt_tokens)
        self.finished_total += int(finished)

    def publish(self, running: int, waiting: int, kv_cache_usage: float | None, batch_limit: int,
                max_num_seqs: int, force: bool = False) -> EngineState | None:
        """Write a record if one is due; return it, or None when rate-limited.

        Due: `force`, the first record, the engine went idle or woke up, or `min_interval_s`
        passed since the last record (a busy engine's record is renewed even when nothing
        changed, so its age says the engine is alive).
        """
        now_s = self._clock()
        queues = (int(running), int(waiting))
        idle_now = queues == (0, 0)
        was_idle = self._last is None or self._last == (0, 0)
        if not (force or self._last is None or idle_now != was_idle) and now_s < self._next_s:
            return None
        self.seq += 1
        state = EngineState(
            self.seq, self._pid, time.time(), now_s, queues[0], queues[1], kv_cache_usage, int(batch_limit),
            int(max_num_seqs), self.steps, self.generated_tokens_total, self.prompt_tokens_total,
            self.finished_total, self.dp_rank, self.dp_size,
        )
        # Not durable: the record matters only to the live processes at both ends, and an fsync
        # inside a scheduler step would stall the engine.
        atomic_write_bytes(self.path, encode_state(state), durable=False, mode=_FILE_MODE)
        self._last = queues
        self._next_s = now_s + self.min_interval_s
        return state


@dataclass(frozen=True)
class EngineSnapshot:
    """The engine-state records of every data-parallel engine, added up."""

    records: tuple[EngineState, ...]
    """One per engine, rank order."""
    running: int
    waiting: int
    kv_cache_usage: float | None
    """Mean over the engines that report it."""
    generated_tokens_total: int
    prompt_tokens_total: int
    finished_total: int
    monotonic_s: float
    """When the newest of the records was published (the publishers' shared monotonic clock). Units: s."""
    oldest_monotonic_s: float
    """When the oldest of them was published. Units: s."""

    @property
    def idle(self) -> bool:
        """No engine has anything running or waiting (so none runs a step until work arrives)."""
        return all(r.idle for r in self.records)

    @property
    def key(self) -> tuple[tuple[int, int], ...]:
        """(pid, seq) per engine: changes whenever any engine publishes."""
        return tuple((r.pid, r.seq) for r in self.records)


class _RankReader:
    """Reads one engine's record file: torn records and older ones from the same publisher ignored."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.last: EngineState | None = None
        self.ignored_torn = 0
        self.ignored_stale = 0

    def read(self) -> EngineState | None:
        data = read_record_file(self.path, RECORD_SIZE_BYTES)
        if data is None:
            return self.last
        state = decode_state(data)
        if state is None:
            self.ignored_torn += 1
            return self.last
        last = self.last
        if last is not None and state.pid == last.pid and state.seq < last.seq:
            self.ignored_stale += 1
            return last
        self.last = state
        return state


class StateReader:
    """The controller's end: reads every engine's latest record and judges whether it is current.

    Args:
        channel_path: The cap channel's command file; the records are `state_path_for(channel_path, rank)`.
        max_age_s: A busy engine's record older than this is stale (a long step, a stuck engine,
            or a publisher that is gone); an idle engine's record stays current for as long as its
            publisher lives (an idle engine runs no steps, so it publishes nothing new).
        clock: Monotonic time source, the same clock the publishers stamp with.
    """

    def __init__(self, channel_path: str | os.PathLike, max_age_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.channel_path = os.fspath(channel_path)
        self.path = state_path_for(self.channel_path)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._ranks: dict[int, _RankReader] = {0: _RankReader(self.path)}

    @property
    def ignored_torn(self) -> int:
        return sum(r.ignored_torn for r in self._ranks.values())

    @property
    def ignored_stale(self) -> int:
        return sum(r.ignored_stale for r in self._ranks.values())

    def read(self) -> EngineSnapshot | None:
        """Every engine's newest valid record, added up; None until each engine has one.

        A torn record, or one older (lower sequence number from the same publisher) than one
        already read, is ignored: that engine's last good record stands (its age says how old
        it is). A record from another process id (vLLM restarted) starts afresh.
        """
        first = self._ranks[0].read()
        if first is None:
            return None
        records = [first]
        for rank in range(1, first.dp_size):
            reader = self._ranks.setdefault(rank, _RankReader(state_path_for(self.channel_path, rank)))
            state = reader.read()
            if state is None:
                return None
            records.append(state)
        kv = [r.kv_cache_usage for r in records if r.kv_cache_usage is not None]
        return EngineSnapshot(
            records=tuple(records),
            running=sum(r.running for r in records),
            waiting=sum(r.waiting for r in records),
            kv_cache_usage=sum(kv) / len(kv) if kv else None,
            generated_tokens_total=sum(r.generated_tokens_total for r in records),
            prompt_tokens_total=sum(r.prompt_tokens_total for r in records),
            finished_total=sum(r.finished_total for r in records),
            monotonic_s=max(r.monotonic_s for r in records),
            oldest_monotonic_s=min(r.monotonic_s for r in records),
        )

    def age_s(self, snapshot: EngineSnapshot) -> float:
        """How old the oldest record of `snapshot` is now. Units: s."""
        return max(0.0, self._clock() - snapshot.oldest_monotonic_s)

    def judge(self, snapshot: EngineSnapshot | None) -> tuple[bool, str]:
        """Whether `snapshot` describes the engine now, and why, in words."""
        if snapshot is None:
            return False, f"no engine-state record in {self.path}"
        gone = [r.pid for r in snapshot.records if not _alive(r.pid)]
        if gone:
            return False, f"the engine-state publisher (pid {gone[0]}) is gone"
        age_s = self.age_s(snapshot)
        if age_s > self.max_age_s and not snapshot.idle:
            return False, f"engine-state record {age_s:.1f} s old (limit {self.max_age_s:g} s): a long engine step?"
        return True, f"engine-state record {age_s:.2f} s old"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (vLLM run as another user): alive
    return True
