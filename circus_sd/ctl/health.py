"""`circusctl is-active` and `is-failed`: systemctl's words and exit codes, for health checks.

As systemctl (systemctl-is-active.c): one word per watcher named (a glob names every watcher it
matches); exit 0 if at least one is in a good state, else 4 if none of the names is a watcher
(LSB "status unknown"), else 3 for is-active ("not running") and 1 for is-failed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING

from circus_sd.client import CallError
from circus_sd.ctl.plain import error_line, is_error

if TYPE_CHECKING:
    from circus_sd.ctl.app import Session
    from circus_sd.ctl.commandline import Invocation

EXIT_UNKNOWN = 4

# A watcher's state as systemd's ActiveState word. `paused` (flapping, a timer will start it
# again) is systemd's auto-restart, whose ActiveState is `activating`.
SYSTEMD_WORD = {
    "active": "active",
    "starting": "activating",
    "stopping": "deactivating",
    "stopped": "inactive",
    "paused": "activating",
    "failed": "failed",
}
# What a watcher that does not exist is, as systemctl says of a unit it cannot find.
UNKNOWN_WORD = "inactive"


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    good_words: frozenset[str]
    exit_otherwise: int


CHECKS = {
    "is-active": HealthCheck(frozenset({"active"}), 3),
    "is-failed": HealthCheck(frozenset({"failed"}), 1),
}


def verdict(check: HealthCheck, patterns: list[str], states: Mapping[str, str]
            ) -> tuple[list[str], int]:
    """(the word of each watcher named, the exit status); `states` is every watcher's state."""
    words: list[str] = []
    found_any = False
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            names = [name for name in sorted(states)
                     if fnmatch.fnmatchcase(name.lower(), pattern.lower())]
        else:
            names = [name for name in states if name.lower() == pattern.lower()][:1] or [pattern]
        for name in names:
            state = states.get(name)
            found_any = found_any or state is not None
            words.append(UNKNOWN_WORD if state is None else SYSTEMD_WORD.get(state, state))
    if any(word in check.good_words for word in words):
        return words, 0
    return words, (check.exit_otherwise if found_any else EXIT_UNKNOWN)


def run_health(session: Session, invocation: Invocation) -> int:
    command = invocation.command
    assert command in CHECKS
    if not invocation.args:
        session.error(f"{command}: give one or more watcher names (globs allowed)")
        return 2
    try:
        reply = session.client.call("status", details=True)
    except CallError as exc:
        session.error(str(exc))
        return 1
    if is_error(reply):
        session.error(error_line(reply))
        return 1
    details = reply.get("details")
    if isinstance(details, Mapping):
        states = {str(name): str(info.get("state")) for name, info in details.items()
                  if isinstance(info, Mapping)}
    else:  # a Circus arbiter: its four statuses
        states = {str(name): str(state) for name, state in (reply.get("statuses") or {}).items()}
    words, status = verdict(CHECKS[command], invocation.args, states)
    if not invocation.flags.get("quiet"):
        for word in words:
            print(word, file=session.stdout)
    return status
