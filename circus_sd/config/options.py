"""Option declarations: each config option's key, parser, default and doc, in one place."""

from __future__ import annotations

import dataclasses
import grp
import math
import pwd
import re
import resource
import signal
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from circus_sd.access import Tier
from circus_sd.process_bound import kernel_number

T = TypeVar("T")


class OptionValueError(ValueError):
    """A value that does not fit its option; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Option:
    """How one INI key becomes one dataclass field."""

    key: str
    parse: Callable[[str], Any]
    doc: str
    # Reset-able live with `set` without restarting processes (issue 4 uses it).
    live: bool = False
    # Who may change it through the control socket (`set`, `add`). Admin unless declared
    # otherwise, so that a new option is closed to the group until someone decides it is safe.
    tier: Tier = Tier.ADMIN
    # Its value may hold `$(circus.…)` filled per process at each spawn: the loader leaves it be.
    spawn_time: bool = False
    # circusctl sends its value as the text typed, not as a number: the text means more than the
    # number (a user name for `uid`, octal for `umask`), and the arbiter parses it itself.
    sent_as_text: bool = False


def option(
    parse: Callable[[str], T],
    default: T,
    doc: str,
    *,
    key: str | None = None,
    live: bool = False,
    tier: Tier = Tier.ADMIN,
    spawn_time: bool = False,
    sent_as_text: bool = False,
) -> Any:
    """A dataclass field carrying its Option; `key` defaults to the field's name."""
    declared = Option(key or "", parse, doc, live, tier, spawn_time, sent_as_text)
    return dataclasses.field(default=default, metadata={"option": declared})


def option_of(field: dataclasses.Field[Any]) -> Option | None:
    """The Option of a dataclass field, with its key filled in, or None for plain fields."""
    declared = field.metadata.get("option")
    if declared is None:
        return None
    assert isinstance(declared, Option)
    return declared if declared.key else dataclasses.replace(declared, key=field.name)


def field_tier(cls: type, name: str) -> Tier:
    """Who may change field `name` of config dataclass `cls`: its Option's tier, or the
    `tier` in a plain field's metadata; admin when neither says (fail closed)."""
    for field in dataclasses.fields(cls):
        if field.name == name:
            declared = option_of(field)
            if declared is not None:
                return declared.tier
            tier = field.metadata.get("tier", Tier.ADMIN)
            assert isinstance(tier, Tier)
            return tier
    return Tier.ADMIN


def options_of(cls: type) -> dict[str, tuple[str, Option]]:
    """INI key -> (field name, Option) for a config dataclass."""
    found: dict[str, tuple[str, Option]] = {}
    for field in dataclasses.fields(cls):
        declared = option_of(field)
        if declared is not None:
            found[declared.key] = (field.name, declared)
    return found


# -- value parsers -------------------------------------------------------------------------------
# Each takes the raw INI string (already stripped and substituted) and returns the typed value or
# raises OptionValueError with what was expected.

def decimal_integer(value: str) -> int | None:
    """The integer `value` spells in decimal digits, or None if it is not only digits or is
    longer than Python converts (4300 digits). (`str.isdigit` accepts `²`, which int refuses.)"""
    if not value.isdecimal():
        return None
    try:
        return int(value)
    except ValueError:
        return None


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OptionValueError(f"expected a boolean (true/false), got {raw!r}")


def text(raw: str) -> str:
    return raw


def optional_text(raw: str) -> str | None:
    return raw or None


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise OptionValueError(f"expected an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise OptionValueError(f"expected an integer >= {minimum}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise OptionValueError(f"expected an integer <= {maximum}, got {raw!r}")
        return value

    return parse


def optional_integer(minimum: int, maximum: int) -> Callable[[str], int | None]:
    """An integer from `minimum` to `maximum`; empty = None (the option's computed default)."""
    bounded = integer(minimum, maximum)

    def parse(raw: str) -> int | None:
        return bounded(raw) if raw.strip() else None

    return parse


def number(minimum: float = 0.0) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise OptionValueError(f"expected a number of seconds, got {raw!r}") from None
        # Not NaN, not infinity (timers and systemd's EXTEND_TIMEOUT_USEC need a number).
        if not math.isfinite(value) or value < minimum:
            raise OptionValueError(f"expected a number >= {minimum:g}, got {raw!r}")
        return value

    return parse


def regex(raw: str) -> str | None:
    """A Python regular expression, checked here so that a typo is a config error. It is matched
    against output as bytes (UTF-8): it must compile as a bytes pattern too."""
    if not raw:
        return None
    try:
        re.compile(raw.encode(errors="surrogateescape"))
    except re.error as exc:
        raise OptionValueError(f"not a valid regular expression ({exc}): {raw!r}") from None
    return raw


def name_list(raw: str) -> tuple[str, ...]:
    """Comma- or space-separated names."""
    return tuple(name for name in raw.replace(",", " ").split() if name)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_size(raw: str) -> str | None:
    """A cgroup memory value: bytes with an optional K/M/G/T suffix, or `max`."""
    value = raw.strip().upper().removesuffix("B")
    if not value:
        return None
    if value == "MAX":
        return "max"
    number_, unit = value.rstrip("KMGT"), value[len(value.rstrip("KMGT")) :]
    try:
        return str(int(float(number_) * _SIZE_UNITS[unit]))
    except (ValueError, KeyError, OverflowError):  # OverflowError: inf
        raise OptionValueError(f"expected a size like 512M, 2G or max, got {raw!r}") from None


def cpu_quota(raw: str) -> str | None:
    """cpu.max: `50%` (of one core), `max`, or `QUOTA PERIOD` in microseconds."""
    value = raw.strip().lower()
    if not value:
        return None
    period = 100_000
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if percent <= 0:
                raise ValueError(value)
            return f"{int(percent / 100 * period)} {period}"
        parts = value.split()
        if parts[0] == "max" and len(parts) <= 2:
            return f"max {int(parts[1]) if len(parts) == 2 else period}"
        if len(parts) == 2:
            return f"{int(parts[0])} {int(parts[1])}"
    except (ValueError, OverflowError):  # OverflowError: inf%
        pass
    raise OptionValueError(f"expected a CPU quota like 50%, max, or 'QUOTA PERIOD', got {raw!r}")


def weight(raw: str) -> str | None:
    """cpu.weight / io.weight: 1 to 10000 (100 is the default share)."""
    value = raw.strip()
    if not value:
        return None
    number_ = decimal_integer(value)
    if number_ is not None and 1 <= number_ <= 10000:
        return str(number_)  # written to a cgroup file: ASCII digits only
    raise OptionValueError(f"expected a weight from 1 to 10000, got {raw!r}")


def count_or_max(raw: str) -> str | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value == "max":
        return value
    number_ = decimal_integer(value)
    if number_ is not None and number_ > 0:
        return str(number_)  # written to a cgroup file: ASCII digits only
    raise OptionValueError(f"expected a positive number or max, got {raw!r}")


def cgroup_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value in ("auto", "required", "off"):
        return value
    raise OptionValueError(f"expected auto, required or off, got {raw!r}")


def octal_mode(raw: str) -> int | None:
    value = raw.strip()
    if not value:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise OptionValueError(f"expected an octal mode like 022, got {raw!r}") from None
    if not 0 <= mode <= 0o777:
        raise OptionValueError(f"expected an octal mode between 000 and 777, got {raw!r}")
    return mode


def signal_number(raw: str) -> int:
    value = raw.strip().upper()
    if value.isdecimal():
        number_ = decimal_integer(value)
        if number_ in set(signal.Signals):
            return number_
    else:
        name = value if value.startswith("SIG") else "SIG" + value
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise OptionValueError(f"expected a signal name or number (e.g. SIGTERM, 15), got {raw!r}")


def user_id(raw: str) -> int | None:
    value = raw.strip()
    if not value:
        return None
    try:
        return pwd.getpwnam(value).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL or a lone surrogate (from JSON)
        pass
    uid = decimal_integer(value)
    if uid is not None:
        return uid
    raise OptionValueError(f"expected a user name or uid, but no user {raw!r} exists")


# What useradd(8)/groupadd(8) accept (NAME_REGEX, with upper case and Samba's trailing `$`).
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def unknown_account(field: str, raw: str) -> str | None:
    """The name in `raw` if it is a user (`uid`) or group (`gid`) name this machine has no
    account for yet, else None (a number, a known name, or empty)."""
    value = raw.strip()
    if not _ACCOUNT_NAME.fullmatch(value):
        return None  # a number, or no name any account could have: the parser says which
    try:
        (pwd.getpwnam if field == "uid" else grp.getgrnam)(value)
    except KeyError:
        return value
    return None


def primary_group(uid: int) -> int | None:
    """The primary group of user `uid`: what a watcher with `uid` and no `gid` runs as (never
    the arbiter's own group). None for a uid without a passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def group_id(raw: str) -> int | None:
    value = raw.strip()
    if not value:
        return None
    try:
        return grp.getgrnam(value).gr_gid
    except (KeyError, ValueError):  # ValueError: a NUL or a lone surrogate (from JSON)
        pass
    gid = decimal_integer(value)
    if gid is not None:
        return gid
    raise OptionValueError(f"expected a group name or gid, but no group {raw!r} exists")


# -- `[socket:NAME]` values ----------------------------------------------------------------------

_FAMILIES = {f.name: f for f in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)}
_KINDS = {k.name: k for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)}
# For systems without /etc/protocols (minimal containers).
_PROTOCOLS = {"ip": 0, "tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "mptcp": 262}


def socket_family(raw: str) -> socket.AddressFamily | None:
    """`AF_INET`, `AF_INET6` or `AF_UNIX` (any case, `AF_` optional); empty = derived."""
    value = raw.strip().upper()
    if not value:
        return None
    found = _FAMILIES.get(value if value.startswith("AF_") else "AF_" + value)
    if found is None:
        raise OptionValueError(f"expected AF_INET, AF_INET6 or AF_UNIX, got {raw!r}")
    return found


def socket_kind(raw: str) -> socket.SocketKind:
    value = raw.strip().upper() or "SOCK_STREAM"
    found = _KINDS.get(value if value.startswith("SOCK_") else "SOCK_" + value)
    if found is None:
        raise OptionValueError(f"expected SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET, got {raw!r}")
    return found


def socket_protocol(raw: str) -> int:
    """A protocol name from /etc/protocols (`tcp`, `udp`...) or number; empty = 0 (default)."""
    value = raw.strip().lower()
    if not value:
        return 0
    number_ = decimal_integer(value)
    if number_ is not None:
        return number_
    try:
        return socket.getprotobyname(value)
    except (OSError, ValueError):  # ValueError: a NUL or a lone surrogate (from JSON)
        if value in _PROTOCOLS:
            return _PROTOCOLS[value]
    raise OptionValueError(f"expected a protocol name (tcp, udp...) or number, got {raw!r}")


def port_number(raw: str) -> int:
    value = raw.strip()
    port = decimal_integer(value)
    if port is not None and port <= 65535:
        return port
    raise OptionValueError(f"expected a port number from 0 to 65535, got {raw!r}")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value == "warn":
        value = "warning"
    if value not in LOG_LEVELS:
        raise OptionValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return value


def _rlimit_value(raw: str) -> int:
    value = raw.strip().lower()
    if value in ("", "infinity", "unlimited", "max", "-1"):
        return resource.RLIM_INFINITY
    if value.isdecimal():
        return int(value)
    raise ValueError(value)


def rlimit_pair(raw: str) -> tuple[int, int]:
    """`N` (soft = hard = N), `SOFT:HARD`, or empty / `infinity` for RLIM_INFINITY."""
    soft_raw, _, hard_raw = raw.partition(":")
    try:
        soft = _rlimit_value(soft_raw)
        hard = _rlimit_value(hard_raw) if ":" in raw else soft
    except ValueError:
        raise OptionValueError(
            f"expected a limit: a number, SOFT:HARD, or empty for infinity, got {raw!r}"
        ) from None
    infinity = resource.RLIM_INFINITY
    if hard != infinity and (soft == infinity or soft > hard):
        raise OptionValueError(f"soft limit above hard limit in {raw!r}")
    return soft, hard


# resource.RLIMIT_NOFILE -> "rlimit_nofile", for every limit this platform knows.
RLIMITS: dict[str, int] = {
    "rlimit_" + name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}


def _nr_open() -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open; 1048576 unless raised)."""
    return kernel_number("/proc/sys/fs/nr_open") or 1 << 20


def rlimit_setting(key: str, raw: str) -> tuple[int, int, int]:
    """`rlimit_NAME = N | SOFT:HARD | infinity`: (RLIMIT_* number, soft, hard), refusing what
    setrlimit(2) would refuse in every child (so that it fails here, not at each spawn)."""
    number_ = RLIMITS.get(key)
    if number_ is None:
        raise OptionValueError(f"unknown resource limit; valid ones: {', '.join(sorted(RLIMITS))}")
    soft, hard = rlimit_pair(raw)
    if number_ == resource.RLIMIT_NOFILE:
        ceiling = _nr_open()
        if hard == resource.RLIM_INFINITY or hard > ceiling:
            raise OptionValueError(
                f"open files cannot be unlimited: at most {ceiling} (fs.nr_open), got {raw!r}"
            )
    return number_, soft, hard


def byte_size(minimum: int, maximum: int) -> Callable[[str], int]:
    """A number of bytes, with an optional K/M/G suffix (powers of 1024): `256K`, `1M`."""

    def parse(raw: str) -> int:
        value = raw.strip().upper().removesuffix("B")
        number_, unit = value.rstrip("KMG"), value[len(value.rstrip("KMG")) :]
        try:
            size = float(number_) * _SIZE_UNITS[unit]
            if not math.isfinite(size) or size != int(size):
                raise ValueError(raw)
        except (ValueError, KeyError):
            raise OptionValueError(f"expected a size like 64K or 1M, got {raw!r}") from None
        if not minimum <= size <= maximum:
            raise OptionValueError(
                f"expected a size from {minimum} to {maximum} bytes, got {raw!r}"
            )
        return int(size)

    return parse


def endpoint_address(raw: str) -> str | None:
    """A ZMQ endpoint (`ipc://PATH`, `tcp://HOST:PORT`) or `systemd:NAME`; empty: the default.
    Not an abstract unix socket (`ipc://@name`): it has no file, so no permission keeps any
    local user from connecting (systemd may still pass one, as `systemd:NAME`)."""
    if raw.strip().startswith("ipc://@"):
        raise OptionValueError(
            f"an abstract socket has no file permissions, every local user could connect to "
            f"it: use a path, such as ipc:///run/circus-sd/control.sock, got {raw!r}"
        )
    return raw or None
