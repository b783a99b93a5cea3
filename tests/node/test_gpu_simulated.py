"""SimulatedGpuBackend, the GPU test double: physics, the shared 'driver' file, errors."""

from __future__ import annotations

import pytest

from pals.errors import ConfigError, HardwareUnavailable, PermissionDenied
from pals.node.gpu import open_gpus
from pals.node.gpu_backend import GpuBackend
from pals.node.simulated_gpu import SimulatedGpuBackend


def test_is_a_gpu_backend_and_says_it_is_a_double(sim):
    assert isinstance(sim, GpuBackend)
    assert sim.count() == 4
    assert "simulated" in sim.name(0)
    assert len({sim.uuid(i) for i in range(4)}) == 4


def test_limits_come_from_the_preset(sim, a100):
    assert sim.power_limit_range_w(0) == (a100.power_limit_min_w, a100.power_limit_max_w)
    assert sim.default_power_limit_w(2) == a100.tdp_w
    assert sim.get_power_limit_w(3) == a100.tdp_w


def test_power_is_natural_draw_below_the_cap_and_the_cap_above_it(sim, a100):
    natural_w = a100.idle_context_w + 0.5 * (a100.tdp_w - a100.idle_context_w)
    assert sim.power_w(0) == pytest.approx(natural_w)
    sim.set_power_limit_w(0, 150.0)
    assert sim.power_w(0) == pytest.approx(min(150.0, natural_w))
    sim.set_power_limit_w(0, 350.0)  # above the natural draw: changes nothing
    assert sim.power_w(0) == pytest.approx(natural_w)


def test_energy_integrates_power_over_the_clock(sim, clock):
    sim.set_utilisation(1.0)
    start_j = sim.energy_j(1)
    clock.t_s += 10.0
    assert sim.energy_j(1) - start_j == pytest.approx(10.0 * 400.0)
    sim.set_power_limit_w(1, 200.0)
    clock.t_s += 5.0
    assert sim.energy_j(1) - start_j == pytest.approx(10.0 * 400.0 + 5.0 * 200.0)


def test_custom_power_model_is_used(a100, driver_path, clock):
    gpus = SimulatedGpuBackend(a100, 2, driver_path, natural_power_w=lambda i, t: 90.0 + 10 * i, clock=clock)
    assert gpus.power_w(1) == pytest.approx(100.0)


def test_a_second_instance_sees_the_same_limits(sim, a100, driver_path):
    sim.set_power_limit_w(2, 180.0)
    other = SimulatedGpuBackend(a100, 4, driver_path)  # as another process would
    assert other.get_power_limit_w(2) == 180.0
    other.set_power_limit_w(2, 260.0)
    assert sim.get_power_limit_w(2) == 260.0


def test_out_of_range_and_bad_index_are_config_errors(sim):
    with pytest.raises(ConfigError, match="outside GPU 0's range 100-400 W"):
        sim.set_power_limit_w(0, 50.0)
    with pytest.raises(ConfigError, match="does not exist"):
        sim.get_power_limit_w(4)
    assert sim.get_power_limit_w(0) == 400.0


def test_without_permission_writes_fail_but_unchanged_values_do_not(a100, driver_path):
    gpus = SimulatedGpuBackend(a100, 2, driver_path, settable=False)
    assert not gpus.can_set_power_limit()
    gpus.set_power_limit_w(0, 400.0)  # unchanged: no write, no error
    with pytest.raises(PermissionDenied, match="zeusd"):
        gpus.set_power_limit_w(0, 300.0)


def test_driver_file_for_other_gpus_is_refused(sim, a100, driver_path):
    with pytest.raises(ConfigError, match="describes 4x"):
        SimulatedGpuBackend(a100, 2, driver_path)


def test_corrupt_driver_file_is_one_clear_error(a100, driver_path):
    driver_path.parent.mkdir(parents=True)
    driver_path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable.*delete it"):
        SimulatedGpuBackend(a100, 1, driver_path)


def test_open_gpus_simulated_and_unknown_kind(driver_path):
    gpus = open_gpus("simulated", sim_gpus=2, sim_gpu="H100-SXM", driver_state_path=driver_path)
    assert gpus.count() == 2 and gpus.kind == "simulated"
    with pytest.raises(ConfigError, match="unknown GPU backend"):
        open_gpus("cuda")
