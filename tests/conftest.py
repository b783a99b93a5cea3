"""Session-wide test hygiene: no test writes to the user's real PALS paths or litters $TMPDIR.

For the whole session, PALS's per-user paths point into pytest's own temporary directory:
PALS_STATE_DIR and XDG_STATE_HOME (saved power limits, GPU locks, the GPU test double's default
driver-state file), XDG_RUNTIME_DIR (the default batch-cap channel) and TMPDIR (`pals serve`'s
work directory, anything a child process puts in its temp dir). Child processes inherit them.
HOME and PALS_CACHE_DIR are left alone: the vLLM environments, model files and profiling cache
the tests reuse live there on purpose.

At the end, the user's real PALS paths (the state directory, the test double's former shared
default in $TMPDIR, the default cap-channel directory) are compared with a snapshot taken at the
start; a test that wrote there (through a path computed before the redirection, or a
hard-coded one) fails the session with the paths it touched. A PALS run of your own, outside the
tests, writing to those paths during the session, would trip it too: the message says so. The
top level of the real $TMPDIR is not watched (other programs write there all the time); the
redirection is what keeps the tests out of it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_MAX_ENTRIES = 5000
"""Snapshot at most this many files per watched path (the real state dir holds a handful)."""


def _real_paths() -> list[Path]:
    """The user's own PALS paths, as the environment names them before the session changes it."""
    uid = os.getuid()
    state = Path(os.environ["PALS_STATE_DIR"]) if os.environ.get("PALS_STATE_DIR") else Path(
        os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pals"
    tmp = Path(tempfile.gettempdir())
    runtime = Path(os.environ["XDG_RUNTIME_DIR"]) if os.environ.get("XDG_RUNTIME_DIR") else Path(f"/tmp/pals-{uid}")
    return [
        state,  # saved limits, GPU locks, the test double's default driver state
        tmp / f"pals-simulated-gpu-{uid}",  # the former shared default of the test double
        runtime,  # the default batch-cap channel's directory
    ]


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    if not path.exists():
        return {}
    if path == Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")):  # shared with the desktop: pals-* only
        entries = [p for p in path.iterdir() if p.name.startswith("pals-")] if path.is_dir() else []
    elif path.is_dir():
        entries = []
        for root, dirs, files in os.walk(path):
            entries.extend(Path(root) / name for name in dirs + files)
            if len(entries) > _MAX_ENTRIES:
                break
    else:
        entries = [path]
    out = {}
    for entry in entries:
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        out[str(entry)] = (info.st_mtime_ns, info.st_size)
    return out


@pytest.fixture(scope="session", autouse=True)
def no_writes_to_the_users_real_paths(tmp_path_factory):
    watched = _real_paths()
    before = {str(p): _snapshot(p) for p in watched}
    sandbox = tmp_path_factory.mktemp("session-env")
    runtime = sandbox / "run"
    runtime.mkdir(mode=0o700)
    (sandbox / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PALS_STATE_DIR", str(sandbox / "state"))
        patch.setenv("XDG_STATE_HOME", str(sandbox / "xdg-state"))
        patch.setenv("XDG_RUNTIME_DIR", str(runtime))
        patch.setenv("TMPDIR", str(sandbox / "tmp"))
        patch.setattr(tempfile, "tempdir", str(sandbox / "tmp"))
        yield sandbox
    after = {str(p): _snapshot(p) for p in watched}
    touched = sorted(
        path
        for key in after
        for path in set(before[key]) ^ set(after[key]) | {p for p in after[key] if before[key].get(p) != after[key][p]}
    )
    if touched:
        pytest.fail(
            "tests wrote to the user's real PALS paths (use tmp_path; the session points PALS_STATE_DIR, "
            "XDG_STATE_HOME, XDG_RUNTIME_DIR and TMPDIR into pytest's tmp dir): " + ", ".join(touched[:20])
            + " (a PALS run of your own during the tests would show here too)",
            pytrace=False,
        )


INHERITED_IGNORES = ("SIGHUP", "SIGINT", "SIGQUIT")
"""Signals a suite inherits as ignored when launched in the background without job control (`cmd &` in a
script: SIGINT and SIGQUIT) or under nohup (SIGHUP). PALS keeps an inherited ignore, by design (the parent chose
it), so the tests of its signal handling start from the default dispositions instead."""


def default_signals_in_child() -> None:
    """`preexec_fn` for a child `pals serve`: `INHERITED_IGNORES` at their default disposition."""
    import signal

    for name in INHERITED_IGNORES:
        signal.signal(getattr(signal, name), signal.SIG_DFL)


@pytest.fixture
def default_stop_signals():
    """`INHERITED_IGNORES` at their default disposition in this process for one test (put back after), and
    `default_signals_in_child` for the children it starts."""
    import signal

    saved = {name: signal.getsignal(getattr(signal, name)) for name in INHERITED_IGNORES}
    for name in INHERITED_IGNORES:
        sig = getattr(signal, name)
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    try:
        yield default_signals_in_child
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)
