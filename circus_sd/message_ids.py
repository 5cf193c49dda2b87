"""The kinds of lines the arbiter logs about watchers and processes, each with a stable MESSAGE_ID.

A MESSAGE_ID is a 128-bit id in journald's form (32 lowercase hex digits), as systemd gives its
own unit events: `journalctl MESSAGE_ID=...` finds one kind of line whatever its wording, so
alerts survive rewording. An id, once published, never changes nor gets reused; a new kind gets a
new random id (`journalctl --new-id128`). The README's table lists them.
"""

from __future__ import annotations

import enum


class MessageId(enum.Enum):
    """One member per kind of line; its value is the MESSAGE_ID."""

    # A watcher as a whole.
    WATCHER_STARTING = "c14211c01f2b4072bc2254258b5f9235"
    WATCHER_ACTIVE = "7ef64265848a44d2a4e0df68e7ce41f8"
    WATCHER_STOPPED = "c2797ca8bf804d778b48f230fbabe843"
    FLAPPING_PAUSED = "8ed8e4773fe94aa7b4c38c1ed33ce7ce"
    FLAPPING_PAUSE_OVER = "c434075388c241a681b8968d6ad3ce60"
    FLAPPING_GAVE_UP = "1f5c50cc942b4140bf595288e3d0bcb2"
    START_GAVE_UP = "53922d1d81da485a873fef91624078c9"
    HOOK_ABORTED_START = "edf5d721bb9941b5bb14a002762551ef"
    SPAWNS_DEFERRED = "64677494055b4065b91a39c8ed8d504b"
    SPAWNS_RESUMED = "709ae758553041d981fc4c377bee78e6"
    OOM_KILL = "229c462a8c2c4a9cbd72c9d6abe4d239"
    # One process.
    PROCESS_SPAWNED = "aabfe6a387d14eb49ac4e76afd291924"
    PROCESS_READY = "f4bdb27b44ae4ae49371002ae574616c"
    PROCESS_STOPPED = "b7f22fa89c83440485f7e66f7f631f8d"
    PROCESS_EXITED = "be4b38355ade477cbac1e5198be7246a"
    PROCESS_START_FAILED = "4cdb87f947ae404aac5d6c9542aa6335"
    RESTART_SCHEDULED = "815fcc33deb547ec899a2039ba51ed4c"
    PROCESS_ERRNO = "aaf255b394c640deb887407fbd3b23bd"
    PROCESS_SIGKILLED = "d262e93df901452e968b14cf345a54c4"
    MAX_AGE_REACHED = "d6f2b59d17634be584cf76a9fd7977b8"
    READY_TIMEOUT = "855f1c67cc864b4dabe9d5c2a94939e9"
    WATCHDOG_TIMEOUT = "21c859c1566c496fab505b1c5ccbb196"
    # Hooks.
    HOOK_RETURNED = "d8eca850b6c841c29632f13d090a5c6e"
    HOOK_FAILED = "625acc56da214eb49f88bc71d75bd2a1"
    SIGNAL_REFUSED = "b79e0096788142fda6a2b40d225a98fb"
    # What processes leave behind.
    ORPHAN_FOUND = "45b48c539d4b4d4d8dff2766dc0ba000"
    ORPHAN_STOPPING = "2aff577ecd284bfa8f4adcf9cea1d828"
    ORPHAN_SURVIVES = "81238fa198394095affd2e8da4cf1be7"
    ORPHAN_KILLED = "525682c4f8954bb780180fcb11c7de22"
    ORPHAN_REAPED = "e89fcae9c2a941e2a22af3afb559f211"
    # The arbiter itself.
    REEXEC = "3d4838e7207d48b198765363c42cc756"
    PROCESS_ADOPTED = "5c077d1b33d84eea81f9861cee6e3215"
