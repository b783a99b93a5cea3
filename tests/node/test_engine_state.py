"""The engine-state record PalsScheduler publishes: format, torn and stale records, rate limit, freshness.

No vLLM here: the publisher is driven as the scheduler drives it (inside vLLM it is
tests/vllm/scheduler_check.py and the end-to-end test that exercise it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from pals.integrations.engine_state import (
    RECORD_SIZE_BYTES,
    EngineState,
    StatePublisher,
    StateReader,
    decode_state,
    encode_state,
    state_path_for,
)


class FakeClock:
    def __init__(self, t_s: float = 1000.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def _state(**kw) -> EngineState:
    base = dict(seq=3, pid=os.getpid(), wall_time_s=1.7e9, monotonic_s=1000.0, running=8, waiting=40,
                kv_cache_usage=0.25, batch_limit=8, max_num_seqs=8, steps=12, generated_tokens_total=960,
                prompt_tokens_total=4096, finished_total=17)
    base.update(kw)
    return EngineState(**base)


def test_round_trip_and_every_corruption_is_refused():
    state = _state()
    data = encode_state(state)
    assert len(data) == RECORD_SIZE_BYTES and decode_state(data) == state
    assert decode_state(encode_state(_state(kv_cache_usage=None))).kv_cache_usage is None
    assert decode_state(data[:-1]) is None  # short
    assert decode_state(data + b"\0") is None  # long
    for i in range(len(data)):  # any single flipped byte: CRC, magic or format catch it
        assert decode_state(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]) is None, i
    assert decode_state(encode_state(_state(waiting=-1))) is None  # implausible even with a good CRC
    assert decode_state(encode_state(_state(dp_rank=2, dp_size=2))) is None


def test_reader_ignores_torn_and_stale_records_and_starts_afresh_after_a_restart(tmp_path):
    channel = tmp_path / "cap"
    path = state_path_for(channel)
    reader = StateReader(channel)
    assert reader.read() is None  # nothing published yet
    good = _state(seq=5)
    with open(path, "wb") as f:
        f.write(encode_state(good))
    assert reader.read().records == (good,)
    with open(path, "wb") as f:
        f.write(encode_state(good)[:40])  # torn (a writer that did not rename)
    assert reader.read().records == (good,) and reader.ignored_torn == 1  # the last good one stands
    with open(path, "wb") as f:
        f.write(encode_state(_state(seq=4)))  # older than one already read, same publisher
    assert reader.read().records == (good,) and reader.ignored_stale == 1
    restarted = _state(seq=1, pid=good.pid + 1)  # vLLM restarted: a new process counts from 1
    with open(path, "wb") as f:
        f.write(encode_state(restarted))
    assert reader.read().records == (restarted,)


def test_a_symlink_or_fifo_at_the_record_path_reads_as_torn(tmp_path):
    channel = tmp_path / "cap"
    path = state_path_for(channel)
    target = tmp_path / "elsewhere"
    target.write_bytes(encode_state(_state()))
    os.symlink(target, path)
    reader = StateReader(channel)
    assert reader.read() is None and reader.ignored_torn == 1
    os.unlink(path)
    os.mkfifo(path)
    assert reader.read() is None and reader.ignored_torn == 2  # and it did not block on the FIFO


def test_publisher_rate_limit_idle_transitions_and_counters(tmp_path):
    clock = FakeClock()
    pub = StatePublisher(state_path_for(tmp_path / "cap"), min_interval_s=0.05, clock=clock)
    reader = StateReader(tmp_path / "cap", clock=clock)
    first = pub.publish(0, 0, 0.0, 8, 8)
    assert first is not None and first.seq == 1 and first.idle  # the first record always goes out
    clock.t_s += 0.01
    woke = pub.publish(1, 3, 0.1, 8, 8)
    assert woke is not None and woke.seq == 2  # waking up goes out at once, within the interval
    pub.step()
    pub.count_outputs(generated_tokens=5, prompt_tokens=100, finished=0)
    clock.t_s += 0.01
    assert pub.publish(4, 0, 0.2, 8, 8) is None  # busy, within the interval: rate-limited
    clock.t_s += 0.05
    busy = pub.publish(4, 0, 0.2, 8, 8)
    assert busy.seq == 3 and (busy.generated_tokens_total, busy.prompt_tokens_total, busy.steps) == (5, 100, 1)
    pub.count_outputs(generated_tokens=4, finished=4)
    clock.t_s += 0.001
    idle = pub.publish(0, 0, 0.0, 8, 8)  # going idle goes out at once, counters and all
    assert idle.seq == 4 and idle.generated_tokens_total == 9 and idle.finished_total == 4
    snapshot = reader.read()
    assert snapshot.idle and snapshot.generated_tokens_total == 9 and snapshot.monotonic_s == clock.t_s


def test_freshness_busy_old_idle_old_and_a_gone_publisher(tmp_path):
    clock = FakeClock()
    pub = StatePublisher(state_path_for(tmp_path / "cap"), clock=clock)
    reader = StateReader(tmp_path / "cap", max_age_s=2.0, clock=clock)
    pub.publish(8, 40, 0.5, 8, 8)
    clock.t_s += 1.0
    live, why = reader.judge(reader.read())
    assert live, why
    clock.t_s += 1.5  # a busy engine that has not published for 2.5 s: stuck, or a very long step
    live, why = reader.judge(reader.read())
    assert not live and "2.5 s old" in why
    pub.publish(0, 0, 0.0, 8, 8, force=True)
    clock.t_s += 600.0  # an idle engine publishes nothing new, and its record still holds
    live, why = reader.judge(reader.read())
    assert live, why
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(state_path_for(tmp_path / "cap"), "wb") as f:
        f.write(encode_state(_state(seq=99, pid=int(gone.stdout), running=0, waiting=0, monotonic_s=clock.t_s)))
    live, why = reader.judge(reader.read())
    assert not live and "is gone" in why


def test_data_parallel_engines_are_added_up(tmp_path):
    channel = tmp_path / "cap"
    clock = FakeClock()
    pubs = [StatePublisher(state_path_for(channel, r), dp_rank=r, dp_size=2, clock=clock) for r in range(2)]
    pubs[0].count_outputs(100, 10, 1)
    pubs[0].publish(3, 1, 0.2, 8, 8)
    reader = StateReader(channel, clock=clock)
    assert reader.read() is None  # rank 1 has not published: no partial sum
    pubs[1].count_outputs(50, 5, 2)
    clock.t_s += 0.5
    pubs[1].publish(5, 0, 0.4, 8, 8)
    snap = reader.read()
    assert (snap.running, snap.waiting, snap.generated_tokens_total, snap.finished_total) == (8, 1, 150, 3)
    assert snap.kv_cache_usage == pytest.approx(0.3)
    assert snap.oldest_monotonic_s == 1000.0 and snap.monotonic_s == 1000.5


def test_a_reader_racing_the_publisher_never_sees_half_a_record(tmp_path):
    """Records are replaced by a rename: a reader polling while the publisher rewrites the file
    thousands of times sees only whole records, each newer than or equal to the last."""
    channel = tmp_path / "cap"
    pub = StatePublisher(state_path_for(channel), min_interval_s=0.0)
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            n += 1
            pub.count_outputs(1)
            pub.publish(n % 9, n % 5, 0.1, 8, 8, force=True)

    writer = threading.Thread(target=publish)
    writer.start()
    reader = StateReader(channel)
    seen = []
    while writer.is_alive():
        snap = reader.read()
        if snap is not None:
            seen.append(snap.generated_tokens_total)
    writer.join()
    assert reader.ignored_torn == 0 and reader.ignored_stale == 0
    assert seen == sorted(seen) and reader.read().generated_tokens_total == pub.generated_tokens_total
