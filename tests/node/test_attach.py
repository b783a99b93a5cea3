"""`pals run --node vllm` (the sidecar's attach mode) against a stand-in vLLM, and its GPU UUID file.

No vLLM here: the /metrics page is the captured one (`FakeVllmServer` of test_vllm_node.py), the
scheduler's end of the cap channel is played by the test, and the GPUs are the simulated test
double. The run against a real vLLM server is tests/vllm/test_attach_e2e.py.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from pals.cli import main
from pals.errors import ConfigError
from pals.integrations.cap_channel import read_record
from pals.node.gpu_select import read_gpu_uuids_file, select_gpus

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: share the stand-ins

from test_vllm_node import FakeVllmServer, _scheduler_end  # noqa: E402

UUID_A = "GPU-0a1b2c3d-0000-1111-2222-333344445555"
UUID_B = "GPU-FFFFFFFF-aaaa-bbbb-cccc-ddddeeeeffff"
SIM_GPU = "A100-SXM4-80GB"


def _write(tmp_path: Path, text: str | bytes, name: str = "gpus") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_the_uuid_file_reads_lines_commas_and_comments(tmp_path):
    text = f"# vLLM's GPUs\n{UUID_A}\n\n  {UUID_B.lower()}  # the second\n"
    assert read_gpu_uuids_file(_write(tmp_path, text)) == (UUID_A, UUID_B.lower())
    # As `echo "$NVIDIA_VISIBLE_DEVICES" > file` writes it.
    assert read_gpu_uuids_file(_write(tmp_path, f"{UUID_A},{UUID_B}\n")) == (UUID_A, UUID_B)
    assert read_gpu_uuids_file(_write(tmp_path, f"SIM-GPU-{SIM_GPU}-1\n")) == (f"SIM-GPU-{SIM_GPU}-1",)


@pytest.mark.parametrize("text,words", [
    ("", "lists no GPU"),
    ("# nothing\n\n", "lists no GPU"),
    ("all\n", "every GPU of the host"),
    ("void", "means no GPU"),
    ("0,1\n", "GPU index 0"),
    ("MIG-0a1b2c3d-0000-1111-2222-333344445555\n", "parent GPU"),
    ("/var/run/nvidia-container-devices\n", "volume-mounts"),
    ("GPU-12\n", "is not a GPU UUID"),
    (f"{UUID_A}\n{UUID_A.upper()}\n".replace(UUID_A.upper(), UUID_A), "more than once"),
    (b"\x00\xff\xfe binary", "not UTF-8"),
])
def test_a_bad_uuid_file_is_one_line_naming_the_fix(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words) as caught:
        read_gpu_uuids_file(_write(tmp_path, text))
    assert "\n" not in str(caught.value) and "--gpu-uuids-file" in str(caught.value)


def test_a_missing_uuid_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="--gpu-uuids-file"):
        read_gpu_uuids_file(tmp_path / "absent")


def test_the_selection_maps_indices_and_refuses_a_gpu_the_host_lacks(tmp_path):
    from pals.node.vllm_node import open_gpu_backend

    gpus = open_gpu_backend("simulated", SIM_GPU, 3, str(tmp_path / "sim" / "driver.json"))
    chosen = select_gpus(gpus, (gpus.uuid(2), gpus.uuid(0)))
    assert chosen.count() == 2 and chosen.kind == "simulated"
    assert [chosen.uuid(i) for i in range(2)] == [gpus.uuid(2), gpus.uuid(0)]
    chosen.set_power_limit_w(0, 250.0)
    assert [gpus.get_power_limit_w(i) for i in range(3)] == [400.0, 400.0, 250.0]
    assert chosen.get_power_limit_w(0) == 250.0 and chosen.power_limit_range_w(1) == gpus.power_limit_range_w(0)
    assert chosen.describe()["sim_gpus"] == 3  # `pals restore` reopens the whole double
    with pytest.raises(ConfigError, match="does not exist"):
        chosen.get_power_limit_w(2)
    with pytest.raises(ConfigError, match=f"{UUID_A} is not a GPU this process can see.*SIM-GPU-{SIM_GPU}-0"):
        select_gpus(gpus, (gpus.uuid(1), UUID_A))


# -- the attach mode through `pals run` -------------------------------------------------------------


def _limits(sim_state: Path) -> list[float]:
    return [g["power_limit_w"] for g in json.loads(sim_state.read_text())["gpus"]]


def test_attach_controls_only_the_listed_gpu_and_restores_on_the_way_out(tmp_path, capsys):
    """Another PALS owner holds GPU 0 of the host (the test's guard): the agent, given GPU 1 by UUID,
    controls that one alone, holds the static configuration, and on the way out puts the batch cap
    back to vLLM's max_num_seqs and GPU 1's original limit back; vLLM itself is never stopped."""
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import open_gpu_backend

    host = open_gpu_backend("simulated", SIM_GPU, 2)  # the double's default state, as the agent's
    sim_state = Path(host.driver_state_path)
    channel = tmp_path / "chan" / "cap"
    channel.parent.mkdir(mode=0o700)  # the pod's shared volume: vLLM's scheduler and the agent both use it
    _scheduler_end(channel, max_cap=8).publish(2, 0, 0.1, 8, 8)
    uuids = _write(tmp_path, f"{host.uuid(1)}\n")
    log = tmp_path / "logs" / "decisions.jsonl"
    neighbour = PowerLimitGuard(host, gpu_indices=[0], handle_signals=False, register_atexit=False)
    try:
        with FakeVllmServer() as server:
            argv = ["run", "--node", "vllm", "--url", server.url, "--cap-channel", str(channel),
                    "--gpu-backend", "simulated", "--gpu", SIM_GPU, "--num-gpus", "2", "--policy", "static",
                    "--power-cap-w", "250", "--batch-cap", "4", "--max-num-seqs", "8", "--tp", "1",
                    "--duration-s", "1.5", "--interval-s", "0.25", "--decision-log", str(log)]
            # Every GPU of the host: GPU 0 is another owner's, refused before anything is written.
            assert main(argv) == 2
            assert "already controlled" in capsys.readouterr().err and not log.exists()
            rc = main([*argv, "--gpu-uuids-file", str(uuids)])
            err = capsys.readouterr().err
            assert server.metrics_answered >= 1  # the stand-in kept serving: nothing stopped it
    finally:
        neighbour.close()
    assert rc == 0, err
    assert "vLLM left running" in err and "restored" in err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 2
    assert all(r["decision"]["config"] == {"power_cap_w": 250.0, "batch_cap": 4} for r in records)
    assert any(r["sample"] and r["sample"]["power_cap_w"] == 250.0 for r in records)
    assert read_record(str(channel)).cap == 8  # batch cap back to max_num_seqs
    assert _limits(sim_state) == [400.0, 400.0]
    assert not (sim_state.parent / "power-limits.json").exists()  # nothing left for `pals restore`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refusals(tmp_path: Path, url: str, channel: Path):
    """(argv after `run`, words the one error line must hold) for each bad attach."""
    report_dir = tmp_path / "chan"
    bare = tmp_path / "bare"
    bare.mkdir(mode=0o700)
    gpus = _write(tmp_path, "0,1\n", "indices")
    absent = _write(tmp_path, "GPU-0a1b2c3d-0000-1111-2222-333344445555\n", "absent")
    sim = ["--gpu-backend", "simulated", "--gpu", SIM_GPU, "--num-gpus", "2", "--policy", "baseline"]
    node = ["--node", "vllm", "--policy", "baseline"]
    return [
        (["--node", "vllm"], ["needs --url"]),
        ([*node, "--url", "localhost:8000"], ["--url", "http://HOST:PORT"]),
        ([*node, "--url", url, "--cap-channel", str(tmp_path / "nodir" / "cap")], ["does not exist"]),
        ([*node, "--url", url, "--cap-channel", str(bare / "cap")], ["no report from PalsScheduler"]),
        ([*node, "--url", url, "--cap-channel", str(channel), "--max-num-seqs", "16"],
         ["--max-num-seqs 16 differs from vLLM's max_num_seqs 8"]),
        ([*node, "--url", f"http://127.0.0.1:{_free_port()}", "--cap-channel", str(channel)], ["cannot reach"]),
        ([*node, "--url", url, "--cap-channel", str(channel), "--gpu-uuids-file", str(gpus)], ["GPU index 0"]),
        ([*node, "--url", url, "--cap-channel", str(channel), "--gpu-uuids-file", str(absent), *sim[:6]],
         ["is not a GPU this process can see"]),
        ([*node, "--url", url, "--cap-channel", str(channel), "--gpu-backend", "nvml"], ["NVIDIA_VISIBLE_DEVICES"]),
        ([*node, "--url", url, "--model", "Mixtral-8x7B", "--saturate"], ["--model, --saturate", "--node sim"]),
        (["--node", "vllm", "--url", url, "--policy", "oracle"], ["ground truth"]),
        (["--node", "vllm", "--url", url], ["--policy pals needs --profile or --predictor"]),
        ([*node, "--url", url, "--gpu", SIM_GPU], ["--gpu", "--gpu-backend simulated"]),
        ([*node, "--url", url, "--power-cap-w", "250"], ["--policy static only"]),
        ([*node, "--url", url, "--decision-log", str(report_dir)], ["is a directory"]),
        (["--model", "Mixtral-8x7B", "--policy", "baseline", "--saturate", "--duration-s", "1", "--out",
          str(tmp_path / "out"), "--url", url], ["--url is for --node vllm only"]),
        (["--model", "Mixtral-8x7B", "--policy", "baseline", "--saturate", "--duration-s", "1"],
         ["--node sim needs --out"]),
        (["--model", "Mixtral-8x7B", "--policy", "baseline", "--duration-s", "1", "--out", str(tmp_path / "out")],
         ["needs a load"]),
    ]


def test_every_bad_attach_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PALS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PALS_GPU_BACKEND", raising=False)
    monkeypatch.delenv("PALS_CAP_CHANNEL", raising=False)
    channel = tmp_path / "chan" / "cap"
    channel.parent.mkdir(mode=0o700)  # the pod's shared volume: vLLM's scheduler and the agent both use it
    _scheduler_end(channel, max_cap=8)
    before = read_record(str(channel) + ".applied")
    with FakeVllmServer() as server:
        for argv, words in _refusals(tmp_path, server.url, channel):
            assert main(["run", *argv]) == 2, argv
            err = capsys.readouterr().err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("pals run: error:"), (argv, err)
            for word in words:
                assert word in lines[0], (argv, lines[0])
    assert read_record(str(channel)) is None  # no batch cap was ever written
    assert read_record(str(channel) + ".applied") == before
    assert not list((tmp_path / "state").rglob("power-limits.json")) and not (tmp_path / "out").exists()
