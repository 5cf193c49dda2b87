"""Circus's control messages: parsing requests, building replies, error numbers (pure)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from typing import Any


class Errno(enum.IntEnum):
    """Circus's `errno` values (circus/commands/errors.py), plus circus-sd's access refusal."""

    NOT_SPECIFIED = 0
    INVALID_JSON = 1
    UNKNOWN_COMMAND = 2
    MESSAGE_ERROR = 3
    OS_ERROR = 4
    COMMAND_ERROR = 5
    BAD_MSG_DATA_ERROR = 6
    ACCESS_DENIED = 7


class CommandError(Exception):
    """A request that gets an error reply; `reason` is what the client prints."""

    def __init__(self, reason: str, errno: Errno = Errno.MESSAGE_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = errno


@dataclasses.dataclass(frozen=True)
class Request:
    id: str | None
    command: str
    properties: dict[str, Any]
    cast: bool


def parse_request(data: bytes) -> Request:
    """Decode one request frame; raise CommandError (with the id when known) if malformed."""
    if not data:
        raise CommandError("error: empty command", Errno.INVALID_JSON)
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"invalid JSON: {exc}", Errno.INVALID_JSON) from None
    if not isinstance(message, dict):
        raise CommandError("a request must be a JSON object", Errno.INVALID_JSON)
    request_id = message.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        request_id = None
    command = message.get("command")
    properties = message.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(command, str) or not command:
        raise RequestError(request_id, "the request has no command", Errno.MESSAGE_ERROR)
    if not isinstance(properties, dict):
        raise RequestError(request_id, "properties must be a JSON object", Errno.MESSAGE_ERROR)
    return Request(
        id=None if request_id is None else str(request_id),
        command=command.lower(),
        properties=properties,
        cast=message.get("msg_type") == "cast",
    )


class RequestError(CommandError):
    """A malformed request whose id could still be read, so the reply can carry it."""

    def __init__(self, request_id: Any, reason: str, errno: Errno) -> None:
        super().__init__(reason, errno)
        self.request_id = None if request_id is None else str(request_id)


def ok_reply(request_id: str | None, result: dict[str, Any] | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "ok", "time": time.time(), "id": request_id}
    if result:
        reply.update(result)
    return reply


def error_reply(
    request_id: str | None, reason: str, errno: Errno, tb: str | None = None
) -> dict[str, Any]:
    return {
        "status": "error",
        "reason": reason,
        "tb": tb,
        "time": time.time(),
        "errno": int(errno),
        "id": request_id,
    }


def encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, default=str).encode()


# -- typed access to properties ------------------------------------------------------------------


def prop_str(props: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = props.get(key, default)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise CommandError(f"{key}: expected a string, got {type(value).__name__}")


def prop_required_str(props: dict[str, Any], key: str) -> str:
    value = prop_str(props, key)
    if not value:
        raise CommandError(f"message invalid: missing property {key!r}")
    return value


def prop_bool(props: dict[str, Any], key: str, default: bool = False) -> bool:
    value = props.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    if value is None:
        return default
    raise CommandError(f"{key}: expected a boolean, got {value!r}")


def prop_int(props: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = props.get(key)
    if value is None:  # absent or null: the default, as for booleans
        return default
    if isinstance(value, bool):
        raise CommandError(f"{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise CommandError(f"{key}: expected an integer, got {value!r}") from None


def prop_seconds(props: dict[str, Any], key: str) -> float | None:
    """A duration: a finite number of seconds, zero or more (a negative, NaN or infinite
    timeout would never fire, or fire at once)."""
    value = props.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    raise CommandError(f"{key}: expected a number of seconds >= 0, got {value!r}")
