from pals.control.pid import PID


def test_deadband_ignores_small_errors():
    pid = PID(kp=1.0, ki=1.0, deadband=0.05)
    for _ in range(20):
        assert pid.update(0.04, 0.5) == 0.0
    assert pid.integral_ == 0.0


def test_integral_accumulates_and_output_is_clamped():
    pid = PID(kp=0.5, ki=0.4, output_max=0.3, leak_per_s=0.0)
    outputs = [pid.update(0.2, 0.5) for _ in range(50)]
    assert outputs[0] < outputs[5]  # the integral grows while the error persists
    assert max(outputs) <= 0.3 + 1e-12
    assert outputs[-1] == 0.3


def test_anti_windup_recovers_quickly():
    pid = PID(kp=0.5, ki=0.4, output_max=0.3, leak_per_s=0.0)
    for _ in range(500):  # a long saturation must not wind the integral up without bound
        pid.update(0.5, 0.5)
    steps = 0
    while pid.update(-0.2, 0.5) > 0.0:
        steps += 1
        assert steps < 20


def test_leak_forgets_inside_deadband():
    pid = PID(kp=0.0, ki=1.0, leak_per_s=0.5)
    pid.update(0.2, 1.0)
    before = pid.integral_
    for _ in range(10):
        pid.update(0.0, 1.0)
    assert pid.integral_ < 0.01 * before
