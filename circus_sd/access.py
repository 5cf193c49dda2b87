"""Access tiers: who may do what through the control socket (README: Security model).

Its own module, importing nothing, because both the option declarations (config/) and the
command table (control/) say which tier each of their entries needs.
"""

from __future__ import annotations

import enum


class Tier(enum.IntEnum):
    """Who may run a command or change an option: root and the arbiter's user may do all
    (admin); `endpoint_owner` and `endpoint_group` members operate; nobody else connects."""

    READ = 1  # look: status, list, stats, options (without secrets), listen
    OPERATE = 2  # drive the lifecycle of what is configured: start, stop, incr, signal, timings
    ADMIN = 3  # change what runs, as whom, with what: add, rm, set cmd/uid/env..., quit, reload
