"""What circus-sd imports before it runs: modules that only some commands or options need are
imported when first needed, not by every start (each costs start-up time and memory).

Seen from the outside: the real `circus-sd` with PYTHONPROFILEIMPORTTIME=1 (as `python -X
importtime`) writes each module it imports to its stderr, the log here.
"""

from __future__ import annotations

import os
import re

import pytest
from arbiter_harness import Circus, wait_until

from circus_sd.client import CircusClient

pytestmark = pytest.mark.timeout(60)

# Needed only by: `stats` and the signal of a process tree (psutil), CURVE keys (zmq.auth), a
# logger config file (logging.config), a reload (reload_plan), a notify watcher (tempfile);
# the spawner's own module runs only in the spawner.
LAZY = (
    "psutil",
    "zmq.auth",
    "logging.config",
    "circus_sd.reload_plan",
    "tempfile",
    "circus_sd.spawn_server",
)
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def _imported(text: str) -> set[str]:
    return set(IMPORT_LINE.findall(text))


def _importtime_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}


def test_a_running_arbiter_has_not_imported_what_it_does_not_use(circus: Circus) -> None:
    config = circus.write_config("""
        [watcher:sleeper]
        cmd = sleep 3600
        numprocesses = 2
        """)
    arbiter = circus.start(config, env=_importtime_env())
    imported = _imported(arbiter.log())
    # The flag worked: the start path's own modules are listed.
    assert {"asyncio", "zmq", "circus_sd.arbiter", "circus_sd.control.server"} <= imported
    assert not imported & set(LAZY), arbiter.log_tail()

    # And what was left out comes when asked for: `stats` reads /proc through psutil.
    with CircusClient(f"ipc://{circus.tmp}/control.sock") as client:
        stats = client.call("stats", name="sleeper")
    assert stats["status"] == "ok", stats
    assert len(stats["info"]) == 2, stats
    wait_until(lambda: "psutil" in _imported(arbiter.log()), 5.0, "psutil's import logged")


def test_check_imports_neither_the_loop_nor_zmq(circus: Circus) -> None:
    config = circus.write_config("""
        [watcher:sleeper]
        cmd = sleep 3600
        """)
    done = circus.run("--check", str(config), env=_importtime_env())
    assert done.returncode == 0, done.stderr
    imported = _imported(done.stderr)
    assert "circus_sd.config.loader" in imported
    assert not imported & {"asyncio", "zmq", "circus_sd.arbiter", *LAZY}, done.stderr
