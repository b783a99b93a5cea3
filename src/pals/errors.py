"""One exception tree for PALS.

Subclasses are chosen by what the caller should do, not by where the error
came from: `main()` turns any `PalsError` into one stderr line and a non-zero
exit code, so every message must name the fix.
"""


class PalsError(Exception):
    """Root of every error PALS raises on purpose."""


class ConfigError(PalsError):
    """Bad input from the user: flags, config files, preset names, payloads."""


class ProfileError(ConfigError):
    """A profile file is empty, truncated, corrupt or of the wrong schema."""


class ModelMismatchError(ConfigError):
    """A saved predictor does not match the profile, features or libraries."""


class HardwareUnavailable(PalsError):
    """No GPU, or no driver/management library to reach it."""


class PermissionDenied(PalsError):
    """The process may read the GPUs but not set their power limits."""


class ActuationError(PalsError):
    """A control write (power cap, batch cap) failed or did not take effect."""


class EngineUnreachable(PalsError):
    """The serving engine (vLLM) cannot be reached or does not answer as expected."""
