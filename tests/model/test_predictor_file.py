"""Crafted predictor files: refused with one line, and nothing in them ever runs.

Each payload below is live: where it is a pickle, the test first shows that unpickling it does
create its marker file (so the refusal is what keeps the marker away, not a broken payload).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from pals.errors import ModelMismatchError
from pals.model.predictor import PowerPerfPredictor
from pals.model.predictor_io import MODEL_FILE_MAGIC, read_arrays, read_container, write_predictor_file


class _TouchOnLoad:
    """Unpickling this opens (creates) `marker`: stands for any code a crafted pickle could run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def saved(sim_profile, tmp_path_factory):
    """A real predictor file, its header and its arrays."""
    path = tmp_path_factory.mktemp("predictor") / "good.pals"
    PowerPerfPredictor(n_estimators=5, random_state=0).fit(sim_profile).save(path)
    header, payload = read_container(path)
    return path, header, read_arrays(payload, path)


def _container(header: dict, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest().encode()
    return MODEL_FILE_MAGIC + json.dumps(header).encode() + b"\n" + digest + b"\n" + payload


def _refused(path, needle: str) -> str:
    with pytest.raises(ModelMismatchError) as error:
        PowerPerfPredictor.load(path)
    message = str(error.value)
    assert needle in message and "\n" not in message
    return message


def test_a_pickle_payload_of_the_former_format_is_refused_and_never_runs(saved, tmp_path):
    _, header, _ = saved
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    pickle.loads(pickle.dumps(_TouchOnLoad(str(proof))))
    assert proof.exists()  # the payload is live
    path = tmp_path / "old.pals"
    path.write_bytes(_container(dict(header, format_version=1), pickle.dumps(_TouchOnLoad(str(marker)))))
    message = _refused(path, "predictor file format v1 (pickle) is no longer loaded because it can execute code")
    assert f"refit with `pals fit PROFILE --out {path}`" in message
    assert not marker.exists()


def test_a_bare_pickle_is_not_a_predictor_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "bare.pals"
    path.write_bytes(pickle.dumps(_TouchOnLoad(str(marker))))
    _refused(path, "is not a PALS predictor file")
    assert not marker.exists()


def test_an_object_array_in_the_payload_is_refused_unread(saved, tmp_path):
    _, header, arrays = saved
    marker = tmp_path / "marker"
    evil = dict(arrays)
    evil["throughput_tps.value"] = np.array([_TouchOnLoad(str(marker))], dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **evil)  # numpy pickles object arrays into the .npy member
    path = tmp_path / "evil.pals"
    path.write_bytes(_container(header, buffer.getvalue()))
    _refused(path, "not plain float64/int64 (refused unread)")
    assert not marker.exists()
    with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=True) as archive:
        archive["throughput_tps.value"]  # what a pickle-allowing loader would have done
    assert marker.exists()  # the payload is live


def test_compressed_or_oversized_members_are_refused(saved, tmp_path):
    _, header, arrays = saved
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **arrays)
    path = tmp_path / "zip.pals"
    path.write_bytes(_container(header, compressed.getvalue()))
    _refused(path, "is not a plain stored .npy array")

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    member.write(b"\0" * 16)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("caps_w.npy", member.getvalue())
    path.write_bytes(_container(header, bomb.getvalue()))
    _refused(path, "declared shape (1000000000000,) exceeds its data")

    path.write_bytes(_container(header, b"PK\x03\x04 not a zip at all"))
    _refused(path, "has a corrupt array payload")


@pytest.mark.parametrize(
    "name, value, needle",
    [
        ("throughput_tps.left", lambda a: a + 10**6, "left index outside"),
        ("throughput_tps.roots", lambda a: -a - 1, "roots index outside"),
        ("gpu_power_total_w.feature", lambda a: a + 7, "feature outside 0..6"),
        ("throughput_tps.value", lambda a: np.full_like(a, np.inf), "non-finite leaf value"),
        ("throughput_tps.threshold", lambda a: np.full_like(a, np.nan), "NaN threshold"),
        ("throughput_tps.depth", lambda a: np.asarray(10**9, dtype=np.int64), "claims depth 1000000000"),
        ("throughput_tps.trend_coef", lambda a: a[:-1], "trend_coef"),
        ("throughput_tps.trend_low", lambda a: np.full_like(a, np.inf), "not finite"),
        ("throughput_tps.trend_knots", lambda a: a[::-1].copy(), "knots that are not"),
        ("gpu_power_total_w.trend_knots", lambda a: a[:-1], "trend_coef"),  # coefficients no longer match
        ("throughput_tps.trend_knots", None, "lacks array 'throughput_tps.trend_knots'"),
        ("throughput_tps.right", lambda a: a.astype(np.float64), "expected int64"),
        ("caps_w", None, "lacks array 'caps_w'"),
    ],
)
def test_arrays_out_of_bounds_are_refused(saved, tmp_path, name, value, needle):
    _, header, arrays = saved
    crafted = dict(arrays)
    if value is None:
        del crafted[name]
    else:
        crafted[name] = value(crafted[name])
    path = tmp_path / "crafted.pals"
    write_predictor_file(path, header, crafted)
    _refused(path, needle)
