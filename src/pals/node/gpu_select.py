"""The GPUs a process was given, chosen by UUID: the UUID file and a `GpuBackend` over just those GPUs.

A Kubernetes device plugin hands a container its GPUs as UUIDs (`NVIDIA_VISIBLE_DEVICES`); a
sidecar that reaches every GPU of the host (NVML with `NVIDIA_VISIBLE_DEVICES=all`) must control
exactly those, not its neighbours'. `read_gpu_uuids_file` reads and checks the list (one UUID a
line; a comma-separated line, as `echo "$NVIDIA_VISIBLE_DEVICES"` writes it, is read too);
`select_gpus` wraps the host's backend so that index 0..k-1 are the listed GPUs, in the file's
order. Saved limits and locks are keyed by UUID (`pals.node.hwstate`), so a guard over the
selection owns and restores exactly those GPUs.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pals.errors import ConfigError
from pals.node.gpu_backend import GpuBackend, check_index

NVML_UUID = re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
"""A physical GPU's UUID as NVML and `nvidia-smi -L` print it."""
SIMULATED_UUID = re.compile(r"SIM-GPU-[A-Za-z0-9._-]+-[0-9]+")
"""A GPU of the simulated test double (`SimulatedGpuBackend.uuid`: SIM-GPU-<preset>-<index>)."""
MAX_UUIDS_FILE_BYTES = 64 * 1024
"""A list of a node's GPUs is a few hundred bytes; a larger file is not one."""
_NOT_A_LIST = {
    "all": "means every GPU of the host",
    "none": "means no GPU",
    "void": "means no GPU",
}
"""`NVIDIA_VISIBLE_DEVICES` words that are not a list of GPUs, and what they mean."""


def read_gpu_uuids_file(path: str | os.PathLike) -> tuple[str, ...]:
    """The GPU UUIDs listed in `path`: one a line (commas also separate), blank lines and `#` comments skipped.

    Raises:
        ConfigError: the file is missing, not text, empty, or lists something other than distinct GPU
            UUIDs (an index, `all`, a MIG device, a device-list path); one line naming the fix.
    """
    from pals.core.untrusted import read_text_file

    what = f"--gpu-uuids-file {os.fspath(path)}"
    text = read_text_file(path, what, max_bytes=MAX_UUIDS_FILE_BYTES)
    tokens = [t.strip() for line in text.splitlines() for t in line.split("#", 1)[0].split(",")]
    uuids = [t for t in tokens if t]
    if not uuids:
        raise ConfigError(f"{what} lists no GPU; write the UUIDs of the GPUs vLLM was given, one a line "
                          "(nvidia-smi -L shows them)")
    for token in uuids:
        _check_token(token, what)
    repeated = sorted({u for u in uuids if uuids.count(u) > 1})
    if repeated:
        raise ConfigError(f"{what} lists {repeated[0]} more than once; list each GPU once")
    return tuple(uuids)


def _check_token(token: str, what: str) -> None:
    """One clear line for an entry that is not a GPU UUID, naming what it looks like instead."""
    shown = token if len(token) <= 60 else token[:57] + "..."
    if NVML_UUID.fullmatch(token) or SIMULATED_UUID.fullmatch(token):
        return
    if token.lower() in _NOT_A_LIST:
        raise ConfigError(f"{what} says {token!r}, which {_NOT_A_LIST[token.lower()]}, not which GPUs vLLM has; "
                          "write the UUIDs of its GPUs (GPU-...), one a line")
    if token.isdigit():
        raise ConfigError(f"{what} lists GPU index {token}; indices differ between containers: write GPU UUIDs "
                          "(GPU-..., as nvidia-smi -L prints them), one a line")
    if token.upper().startswith("MIG-"):
        raise ConfigError(f"{what} lists the MIG device {shown}; power limits belong to the whole GPU: write the "
                          "UUID of its parent GPU (GPU-...)")
    if token.startswith("/"):
        raise ConfigError(f"{what} holds the path {shown} (the device plugin's volume-mounts strategy), not UUIDs; "
                          "write the names listed in that directory (ls it), one a line")
    raise ConfigError(f"{what}: {shown!r} is not a GPU UUID (GPU- and 32 hex digits, as nvidia-smi -L prints); "
                      "fix that line")


class SelectedGpus:
    """The listed GPUs of `backend` as a `GpuBackend` of their own (index i: the file's i-th UUID).

    Everything the node and the guard use is passed through with the index mapped; the test double's
    extras (`set_utilisation`, `driver_state_path`) too, so a simulated selection behaves as a real one.
    """

    def __init__(self, backend: GpuBackend, indices: tuple[int, ...]) -> None:
        self.backend = backend
        self.indices = tuple(indices)
        self.kind = backend.kind

    def _index(self, index: int) -> int:
        check_index(self, index)
        return self.indices[index]

    def count(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.backend.name(self._index(index))

    def uuid(self, index: int) -> str:
        return self.backend.uuid(self._index(index))

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        return self.backend.power_limit_range_w(self._index(index))

    def default_power_limit_w(self, index: int) -> float:
        return self.backend.default_power_limit_w(self._index(index))

    def get_power_limit_w(self, index: int) -> float:
        return self.backend.get_power_limit_w(self._index(index))

    def set_power_limit_w(self, index: int, watts: float) -> None:
        self.backend.set_power_limit_w(self._index(index), watts)

    def power_w(self, index: int) -> float:
        return self.backend.power_w(self._index(index))

    def energy_j(self, index: int) -> float:
        return self.backend.energy_j(self._index(index))

    def can_set_power_limit(self) -> bool:
        return self.backend.can_set_power_limit()

    # -- the test double's extras -----------------------------------------------------------

    def describe(self) -> dict:
        """How `pals restore` reopens the backend (saved with the limits): the whole host's, not the selection's."""
        describe = getattr(self.backend, "describe", None)
        if callable(describe):
            return dict(describe())
        if self.kind != "simulated":
            return {}
        return {"driver_state_path": str(self.driver_state_path), "sim_gpu": self.backend.spec.name,  # type: ignore[attr-defined]
                "sim_gpus": self.backend.count()}

    @property
    def driver_state_path(self) -> Any:
        return self.backend.driver_state_path  # type: ignore[attr-defined]

    def set_utilisation(self, utilisation: float, index: int | None = None) -> None:
        targets = self.indices if index is None else (self._index(index),)
        for i in targets:
            self.backend.set_utilisation(utilisation, i)  # type: ignore[attr-defined]


def select_gpus(backend: GpuBackend, uuids: tuple[str, ...], source: str = "--gpu-uuids-file") -> SelectedGpus:
    """The GPUs of `backend` whose UUIDs are `uuids` (case-insensitive), in that order.

    Raises:
        ConfigError: a UUID is not a GPU of this host (the message lists the host's).
    """
    host = [backend.uuid(i) for i in range(backend.count())]
    by_uuid = {u.lower(): i for i, u in enumerate(host)}
    missing = [u for u in uuids if u.lower() not in by_uuid]
    if missing:
        raise ConfigError(f"{source}: GPU {missing[0]} is not a GPU this process can see (it sees "
                          f"{', '.join(host)}); list the UUIDs of vLLM's GPUs, and give the agent access to them")
    return SelectedGpus(backend, tuple(by_uuid[u.lower()] for u in uuids))
