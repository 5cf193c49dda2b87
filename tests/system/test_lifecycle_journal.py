"""A watcher's output and what happened to it, in one journal view (container tier).

What the arbiter logs about a watcher (started, exited, restarting in N s...) is sent natively
with the fields of that watcher's output lines, so `journalctl -u circus-sd WATCHER=web` shows
both, in order, and `-p warning` only what went wrong. Entries are read after a cursor taken
before the service starts, so earlier tests' entries never count.
"""

from __future__ import annotations

import re

from conftest import System
from test_journal import MessagesOf, cursor, entries, waiting, watcher_pids

# The README's MESSAGE_IDs, as an operator's alert would name them (stable: never changed).
STARTING = "c14211c01f2b4072bc2254258b5f9235"
ACTIVE = "7ef64265848a44d2a4e0df68e7ce41f8"
EXITED = "be4b38355ade477cbac1e5198be7246a"
RESTART_SCHEDULED = "815fcc33deb547ec899a2039ba51ed4c"

# Says who it is on stdout, then fails before min_uptime: a failed start, restarted after a
# backoff, again and again (no flapping pause, so the restarts go on).
CRASHER = (
    "/bin/sh -c 'echo \"web says hi wid=$CIRCUS_WID pid=$$\"; sleep 0.2; exit 3'"
)
SPEAKER = "/usr/bin/python3 /opt/payload/speaker.py"

CONFIG = f"""
[watcher:web]
cmd = {CRASHER}
min_uptime = 1
backoff_initial = 0.2
backoff_max = 0.5
check_flapping = false
stdout_stream.class = JournalStream

[watcher:calm]
cmd = {SPEAKER} calm
# Any exit is an exit, not a failed start: restarted at once.
min_uptime = 0
stdout_stream.class = JournalStream
stderr_stream.class = JournalStream
"""

SAYS_HI = re.compile(r"web says hi wid=(\d+) pid=(\d+)")
EXIT_RESTART = re.compile(
    r"WARNING web\[1\] pid (\d+) exited with status 3 after 0\.\d+ s \(failed start \d+\); "
    r"restarting in \d\.\d\d s"
)


def test_a_crashing_watchers_output_exits_and_restarts_share_its_fields(system: System) -> None:
    system.configure(CONFIG)
    since = cursor(system)
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    main = system.show("MainPID")
    found: list[dict[str, str]] = []

    def three_crashes() -> bool:
        found[:] = entries(system, since, "-u", "circus-sd", "WATCHER=web")
        restarts = [e for e in found if e.get("MESSAGE_ID") == RESTART_SCHEDULED]
        return len(restarts) >= 3

    waiting(system, three_crashes, 20, "3 restarts of web in its journal", MessagesOf(found))
    assert all(e["WATCHER"] == "web" for e in found)

    # Its output lines, as before: one per process, each with its own pid.
    said: list[dict[str, str]] = []
    pids_that_spoke: list[str] = []
    for entry in found:
        spoke = SAYS_HI.fullmatch(entry["MESSAGE"])
        if spoke is None:
            continue
        said.append(entry)
        pids_that_spoke.append(spoke[2])
        assert (entry["WID"], entry["CHILD_PID"], entry["PRIORITY"]) == (spoke[1], spoke[2], "6")
        assert entry["SYSLOG_IDENTIFIER"] == "web" and "MESSAGE_ID" not in entry

    # Its lifecycle, from the arbiter (native protocol, the arbiter's identifier).
    lifecycle = [e for e in found if "MESSAGE_ID" in e]
    for entry in lifecycle:
        assert entry["_PID"] == main and entry["_TRANSPORT"] == "journal", entry
        assert entry["SYSLOG_IDENTIFIER"] == "circus-sd", entry
        assert entry["_SYSTEMD_UNIT"] == "circus-sd.service"
    first = lifecycle[0]
    assert (first["MESSAGE_ID"], first["PRIORITY"]) == (STARTING, "6")
    assert first["MESSAGE"] == "INFO web: starting 1 process(es)"
    assert "WID" not in first and "CHILD_PID" not in first

    restarts = [e for e in lifecycle if e["MESSAGE_ID"] == RESTART_SCHEDULED]
    for entry in restarts:
        matched = EXIT_RESTART.fullmatch(entry["MESSAGE"])
        assert matched, entry["MESSAGE"]
        assert (entry["WID"], entry["CHILD_PID"], entry["PRIORITY"]) == ("1", matched[1], "4")
        # Interleaved, in order: the process's own line comes before the line about its exit.
        pid = entry["CHILD_PID"]
        assert pid in pids_that_spoke, (pid, pids_that_spoke)
        assert found.index(said[pids_that_spoke.index(pid)]) < found.index(entry)
    # Every crash but maybe the last (its restart not logged yet) has its restart line.
    assert len(restarts) >= len(said) - 1 >= 2, MessagesOf(found)

    # The calm watcher's lines are not web's; its own have its name.
    calm = entries(system, since, "-u", "circus-sd", "WATCHER=calm")
    assert calm and not {e["MESSAGE"] for e in calm} & {e["MESSAGE"] for e in found}
    assert any(e.get("MESSAGE_ID") == ACTIVE for e in calm), calm

    # `-p warning`: only what went wrong (the restarts), none of web's info lines or output.
    problems = entries(system, since, "-u", "circus-sd", "WATCHER=web", "-p", "warning")
    assert problems, "no warning about web"
    assert {e["MESSAGE_ID"] for e in problems} == {RESTART_SCHEDULED}, problems
    assert all(int(e["PRIORITY"]) <= 4 for e in problems)

    # By MESSAGE_ID alone: web's restarts, nothing of calm.
    by_id = entries(
        system, since, "-u", "circus-sd", f"MESSAGE_ID={RESTART_SCHEDULED}"
    )
    assert by_id and {e["WATCHER"] for e in by_id} == {"web"}


def test_a_killed_process_exit_is_a_warning_with_its_pid(system: System) -> None:
    system.configure(CONFIG.replace("[watcher:web]", "[watcher:web]\nautostart = false"))
    since = cursor(system)
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    (victim,) = watcher_pids(system, "calm")
    system.sh(f"kill -KILL {victim}")
    found: list[dict[str, str]] = []

    def exit_logged() -> bool:
        found[:] = entries(system, since, "WATCHER=calm", "-p", "warning")
        return any(e.get("MESSAGE_ID") == EXITED for e in found)

    waiting(system, exit_logged, 10, "calm's exit in the journal", MessagesOf(found))
    (exited,) = [e for e in found if e.get("MESSAGE_ID") == EXITED]
    assert (exited["WID"], exited["CHILD_PID"], exited["PRIORITY"]) == ("1", str(victim), "4")
    assert re.fullmatch(
        rf"WARNING calm\[1\] pid {victim} killed by SIGKILL after \d+\.\d s; restarting",
        exited["MESSAGE"],
    ), exited["MESSAGE"]
    # The output of calm's stderr (priority 4 and 3) is part of what -p warning shows.
    assert any(e["MESSAGE"].startswith("calm err ") for e in found), MessagesOf(found)
