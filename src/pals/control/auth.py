"""Bearer tokens for the control endpoint: where they come from, and who must show one.

The endpoint changes power limits, so a token (sent as `Authorization: Bearer <token>`) guards
it: required for every mutating route whenever one is configured, and required at start (and
then for every route but `/metrics`) whenever the endpoint listens beyond loopback. The cluster
coordinator's client sends the same header (`bearer_header`).

A token comes from a file (`--endpoint-token-file`) or, failing that, the environment variable
`PALS_ENDPOINT_TOKEN`. Like ssh with a private key, a token file that group or others may read
or write is refused: anyone who can read it can set the node's power.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat

from pals.errors import ConfigError

TOKEN_ENV_VAR = "PALS_ENDPOINT_TOKEN"
"""Environment variable read when no token file is given."""

MIN_TOKEN_CHARS = 16
"""Shortest token accepted: a guessable token is no protection."""

MAX_TOKEN_FILE_BYTES = 4096
"""A token file larger than this is not a token file (read no further)."""

_GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def validate_token(token: str, source: str) -> str:
    """Return `token` if it can be sent in a header and is long enough, else raise ConfigError.

    Args:
        token: the candidate token (already stripped of surrounding whitespace).
        source: where it came from, for the error message (a file name or the variable's name).
    """
    if not token:
        raise ConfigError(f"endpoint token from {source} is empty; {_GENERATE_HINT}")
    if not all(33 <= ord(ch) <= 126 for ch in token):
        # Header values cannot carry spaces, control characters or non-ASCII unambiguously.
        raise ConfigError(f"endpoint token from {source} has spaces, control or non-ASCII characters; {_GENERATE_HINT}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"endpoint token from {source} has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}; {_GENERATE_HINT}"
        )
    return token


def resolve_token(token_file: str | os.PathLike | None, env_var: str = TOKEN_ENV_VAR) -> str | None:
    """The endpoint token: the content of `token_file` (stripped), else `$env_var`, else None.

    A file given explicitly wins over the environment.

    Raises:
        ConfigError: the file is missing, not a regular file, readable or writable by group or
            others, owned by another user, not UTF-8 text, or the token is empty or too short.
    """
    if token_file is not None:
        return _read_token_file(os.fspath(token_file))
    value = os.environ.get(env_var)
    if value is None:
        return None
    return validate_token(value.strip(), f"${env_var}")


def _read_token_file(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"endpoint token file {path} does not exist; write a token into it and chmod 600 it") from None
    except PermissionError:
        raise ConfigError(f"endpoint token file {path} cannot be read by this user; check its owner and mode (600)") from None
    except OSError as error:
        raise ConfigError(f"endpoint token file {path} cannot be opened ({error.strerror})") from None
    try:
        # fstat the descriptor we read, not the name: no window to swap the file in between.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"endpoint token file {path} is not a regular file; give a file holding the token")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"endpoint token file {path} has permissions {stat.S_IMODE(info.st_mode):04o}: group or others may "
                f"access it, so anyone who can read it can set this node's power; run: chmod 600 {path}"
            )
        if info.st_uid not in (os.getuid(), 0):
            raise ConfigError(f"endpoint token file {path} belongs to another user (uid {info.st_uid}); use a file you own")
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"endpoint token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it should hold one token")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"endpoint token file {path} is not text; it should hold one token") from None
    return validate_token(text.strip(), f"file {path}")


def is_loopback_host(host: str) -> bool:
    """True when `host` (what the endpoint binds) is reachable from this machine only.

    `localhost` and addresses in 127.0.0.0/8 or ::1 are loopback; any other name is assumed not
    to be (it may resolve to anything), and the wildcard addresses (`0.0.0.0`, `::`, empty)
    listen on every interface.
    """
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token (call it early, before slow setup).

    Raises:
        ConfigError: `host` is not loopback and `token` is None.
    """
    if token is None and not is_loopback_host(host):
        raise ConfigError(
            f"endpoint host {host or '0.0.0.0'!r} is not loopback: anyone who reaches it could set this node's "
            f"power; give a token with --endpoint-token-file FILE (or ${TOKEN_ENV_VAR}), or keep --endpoint-host 127.0.0.1"
        )


def bearer_header(token: str) -> dict[str, str]:
    """The request header that presents `token` (for clients of the endpoint)."""
    return {"Authorization": f"Bearer {token}"}


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header value presents `token`, compared in constant time."""
    if not authorization:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Bytes, not str: compare_digest rejects non-ASCII str with TypeError, and a client controls this value.
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))
