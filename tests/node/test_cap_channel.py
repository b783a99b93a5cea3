"""The batch-cap channel: atomic versioned records; torn or stale ones are never applied."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from pals.integrations.cap_channel import (
    KIND_APPLIED,
    KIND_COMMAND,
    RECORD_SIZE_BYTES,
    CapReader,
    CapRecord,
    CapWriter,
    decode_record,
    effective_cap,
    encode_record,
    read_record,
)
from pals.errors import ConfigError


class FakeMonotonic:
    """A hand-advanced monotonic clock for the reader's rate limit."""

    def __init__(self) -> None:
        self.t_s = 100.0

    def __call__(self) -> float:
        return self.t_s


def test_round_trip_and_crc():
    rec = CapRecord(KIND_COMMAND, seq=7, cap=12, time_s=1234.5)
    data = encode_record(rec)
    assert len(data) == RECORD_SIZE_BYTES
    assert decode_record(data) == rec
    # Any single flipped byte is detected.
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert decode_record(bytes(bad)) is None, f"byte {i} flip not detected"
    assert decode_record(data[:-1]) is None
    assert decode_record(data + b"\0") is None


def test_reader_sees_writes_in_order(tmp_path):
    path = tmp_path / "cap"
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.0)
    assert reader.poll() is None  # no file yet
    writer.write(16)
    rec = reader.poll()
    assert rec is not None and rec.cap == 16 and rec.seq == 1
    assert reader.poll() is None  # same record is not returned twice
    writer.write(4)
    writer.write(9)  # the reader only sees the latest
    rec = reader.poll()
    assert rec.cap == 9 and rec.seq == 3


def test_rate_limit(tmp_path):
    path = tmp_path / "cap"
    clock = FakeMonotonic()
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.05, clock=clock)
    writer.write(8)
    assert reader.poll().cap == 8
    writer.write(3)
    clock.t_s += 0.049
    assert reader.poll() is None  # too soon: not even read
    assert reader.reads == 1
    clock.t_s += 0.002
    assert reader.poll().cap == 3
    assert reader.reads == 2


def test_torn_record_is_ignored_not_applied_half(tmp_path):
    path = tmp_path / "cap"
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.0)
    writer.write(10)
    assert reader.poll().cap == 10
    good_new = encode_record(CapRecord(KIND_COMMAND, seq=2, cap=3, time_s=time.time()))
    old = path.read_bytes()
    # A torn in-place write: first half of the new record, second half of the old one.
    half = RECORD_SIZE_BYTES // 2
    path.write_bytes(good_new[:half] + old[half:])
    assert reader.poll() is None
    # A truncated write.
    path.write_bytes(good_new[:10])
    assert reader.poll() is None
    assert reader.ignored_torn == 2
    assert reader.last_seq == 1  # still the last good command
    # Once the whole record lands, it is applied.
    path.write_bytes(good_new)
    assert reader.poll().cap == 3


def test_stale_record_is_ignored(tmp_path):
    path = tmp_path / "cap"
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.0)
    for cap in (5, 6, 7):
        writer.write(cap)
    assert reader.poll().seq == 3
    # A delayed write from an older writer lands after the newer one.
    path.write_bytes(encode_record(CapRecord(KIND_COMMAND, seq=2, cap=99, time_s=time.time())))
    assert reader.poll() is None
    assert reader.ignored_stale == 1
    # An applied-kind record in the command file is not a command.
    path.write_bytes(encode_record(CapRecord(KIND_APPLIED, seq=9, cap=1, time_s=time.time())))
    assert reader.poll() is None


def test_restarted_writer_continues_the_sequence(tmp_path):
    path = tmp_path / "cap"
    reader = CapReader(path, min_interval_s=0.0)
    CapWriter(path).write(5)
    assert reader.poll().seq == 1
    second = CapWriter(path)  # a new controller process
    second.write(2)
    rec = reader.poll()
    assert rec is not None and rec.cap == 2 and rec.seq == 2


def test_applied_report_round_trip(tmp_path):
    path = tmp_path / "cap"
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.0)
    assert writer.read_applied() is None
    reader.report_applied(seq=4, cap=3, effective_cap=6, running=6, max_cap=16)
    applied = writer.read_applied()
    assert (applied.seq, applied.cap, applied.effective_cap, applied.running, applied.max_cap) == (4, 3, 6, 6, 16)


def test_writer_rejects_bad_cap(tmp_path):
    with pytest.raises(ValueError):
        CapWriter(tmp_path / "cap").write(0)


def test_effective_cap_paths():
    # Admission-limit path (vLLM 0.33+): the target, clipped to the slots.
    assert effective_cap(3, running=8, max_num_seqs=16, drain_safe=False) == 3
    assert effective_cap(40, running=0, max_num_seqs=16, drain_safe=False) == 16
    assert effective_cap(0, running=0, max_num_seqs=16, drain_safe=False) == 1
    # Drain-safe path: never below the running count, falls as requests finish.
    limits = [effective_cap(3, running=r, max_num_seqs=16, drain_safe=True) for r in (8, 6, 4, 3, 1)]
    assert limits == [8, 6, 4, 3, 3]
    assert effective_cap(12, running=2, max_num_seqs=16, drain_safe=True) == 12


_HAMMER_WRITER = """
import sys
from pals.integrations.cap_channel import CapWriter
w = CapWriter(sys.argv[1])
for i in range(int(sys.argv[2])):
    w.write(1 + i % 64)
"""


def test_concurrent_writer_process_never_yields_a_bad_record(tmp_path):
    """A separate process rewrites the channel as fast as it can while we read."""
    path = tmp_path / "cap"
    CapWriter(path).write(1)
    reader = CapReader(path, min_interval_s=0.0)
    proc = subprocess.Popen([sys.executable, "-c", _HAMMER_WRITER, str(path), "3000"])
    seen = []
    try:
        while proc.poll() is None:
            rec = reader.poll()
            if rec is not None:
                seen.append(rec)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert reader.ignored_torn == 0  # atomic replace: never a torn read
    seqs = [r.seq for r in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Every record seen is one the writer wrote: cap follows from seq.
    assert all(r.cap == 1 + (r.seq - 2) % 64 for r in seen if r.seq >= 2)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_reader_thread_sees_new_cap(tmp_path):
    """A polling reader (as in the scheduler) picks up a write; latency is measured in benchmarks."""
    path = tmp_path / "cap"
    writer = CapWriter(path)
    reader = CapReader(path, min_interval_s=0.05)
    got = threading.Event()
    caps = []

    def loop():
        while not got.is_set():
            rec = reader.poll()
            if rec is not None:
                caps.append(rec.cap)
                if rec.cap == 7:
                    got.set()
            time.sleep(0.001)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    writer.write(7)
    assert got.wait(timeout=10)
    t.join(timeout=5)
    assert caps[-1] == 7


def test_settled_means_running_follows_the_cap():
    def rec(running, waiting, cap=4):
        return CapRecord(KIND_APPLIED, 1, cap, 0.0, cap, running, 8, waiting, running)

    assert rec(4, 10).settled  # at the cap
    assert rec(2, 0).settled  # under it, nothing waiting
    assert not rec(2, 3).settled  # under it while requests wait: not yet admitted
    assert not rec(6, 0).settled  # above it: still draining
    assert not CapRecord(KIND_COMMAND, 1, 4, 0.0).settled  # a command carries no counts


# --- the channel's directory and its temporaries (hostile local users) ---


def test_missing_directory_is_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        writer = CapWriter(tmp_path / "pals-1234" / "pals-cap-8000")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "pals-1234").st_mode) == 0o700
    writer.write(3)
    assert read_record(writer.path).cap == 3


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_a_directory_others_can_write_is_refused(tmp_path, mode):
    shared = tmp_path / "pals-1234"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(ConfigError, match=f"writable by group or others.*chmod 700 {shared}") as info:
        CapWriter(shared / "pals-cap-8000")
    assert "\n" not in str(info.value)
    assert not (shared / "pals-cap-8000").exists()


def test_a_symlinked_directory_is_refused(tmp_path):
    real = tmp_path / "attacker"
    real.mkdir(mode=0o700)
    (tmp_path / "pals-1234").symlink_to(real)
    with pytest.raises(ConfigError, match="is a symlink.*rm -r"):
        CapWriter(tmp_path / "pals-1234" / "pals-cap-8000")
    assert list(real.iterdir()) == []


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    (tmp_path / "pals-1234").write_text("x")
    with pytest.raises(ConfigError, match="not a directory|cannot create"):
        CapWriter(tmp_path / "pals-1234" / "pals-cap-8000")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user (CI runs as root)")
def test_a_directory_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "pals-1234"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody
    with pytest.raises(ConfigError, match=f"owned by uid 65534, not by you.*rm -r {theirs}"):
        CapWriter(theirs / "pals-cap-8000")


def test_a_planted_symlink_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    import pals.integrations.cap_channel as cap_channel

    channel = tmp_path / "pals-1234" / "pals-cap-8000"
    writer = CapWriter(channel)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    names = iter(["guessed", "fresh"])
    monkeypatch.setattr(cap_channel.secrets, "token_hex", lambda n: next(names))
    (channel.parent / ".pals-cap-8000.guessed.tmp").symlink_to(victim)  # the attacker guessed the name
    writer.write(5)
    assert victim.read_text() == "precious"
    assert read_record(channel).cap == 5
    assert os.path.islink(channel.parent / ".pals-cap-8000.guessed.tmp")  # left as it was, not removed


def test_a_symlink_at_the_record_path_is_replaced_not_written_through(tmp_path):
    channel = tmp_path / "pals-1234" / "pals-cap-8000"
    writer = CapWriter(channel)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    channel.symlink_to(victim)
    reader = CapReader(channel, min_interval_s=0.0)
    assert reader.poll() is None and reader.ignored_torn == 1  # a symlinked record is never read
    writer.write(6)
    assert victim.read_text() == "precious"
    assert not channel.is_symlink() and read_record(channel).cap == 6


def test_a_fifo_at_the_record_path_does_not_block_the_reader(tmp_path):
    channel = tmp_path / "pals-cap-8000"
    os.mkfifo(channel)
    reader = CapReader(channel, min_interval_s=0.0)
    assert reader.poll() is None and reader.ignored_torn == 1  # returns at once: not opened for a blocking read
