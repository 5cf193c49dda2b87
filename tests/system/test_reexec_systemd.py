"""Live re-execution under a real systemd (container tier), from the Debian package: `circusctl
reexec`, an upgrade with `dpkg -i` of a newer build, and a failure of the arbiter.

Like test_deb.py it boots a container of its own with the package installed (the wheel of the
other system tests would shadow it). Each test restarts the service with 100 processes: 99
sleepers and a writer of sequence numbers, whose lines reach the journal through the arbiter.
Newer builds are made by repacking the .deb (BUILDS); the tests run in file order, each upgrade
starting from the version the one before installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import System
from tbcontainer import SystemdContainer
from test_deb import DEBS, INSIDE, dpkg, the_deb

REEXEC_ID = "3d4838e7207d48b198765363c42cc756"  # MessageId.REEXEC
NEWER_INSIDE = "/opt/circus-sd/newer"
CONF = "/etc/circus-sd/conf.d/reexec.ini"
WRITER = "/opt/reexec-writer.py"
# Each number in two writes: a line begun before a switch must be finished after it.
WRITER_CODE = """\
import itertools, sys, time
for i in itertools.count(1):
    sys.stdout.write("seq "); sys.stdout.flush()
    sys.stdout.write(f"{i}\\n"); sys.stdout.flush()
    time.sleep(0.01)
"""
SLEEPERS = 99
CONFIG = f"""\
[watcher:sleepers]
cmd = /bin/sleep 86399
numprocesses = {SLEEPERS}
graceful_timeout = 2

[watcher:writer]
cmd = /usr/bin/python3 -u {WRITER}
graceful_timeout = 2
"""
SLEEPER_CMD = "^/bin/sleep 86399$"
WRITER_CMD = f"^/usr/bin/python3 -u {WRITER}$"
FULL_STATUS = f"2/2 watchers active, {SLEEPERS + 1} processes"
# What the unit may show while the arbiter switches: RELOADING=1 ... READY=1, nothing else.
ALLOWED_STATES = {"active/running", "reloading/reload"}
SAID_REEXECUTED = "circus-sd: re-executed in place with the new version; no process was restarted."


# Builds made from the package under test, each newer than the one before (by version suffix)
# and holding the changes of the ones before: what each adds, appended to the module named.
PACKAGE_DIR = "usr/lib/python3/dist-packages/circus_sd"
BUILDS: dict[str, dict[str, str]] = {
    # The same code; only the version differs (in `circusctl globaloptions` too).
    "newer": {},
    # A watcher's state has one more attribute here: the new code cannot take over the state of
    # the one before (handover.check), so `reexec` must be refused.
    "other-shape": {
        "watcher.py": (
            "\n_init = Watcher.__init__\n\n"
            "def _with_one_more(self, *args, **kwargs):\n"
            "    _init(self, *args, **kwargs)\n"
            "    self.added_by_a_newer_build = 0\n\n"
            "Watcher.__init__ = _with_one_more\n"
        ),
    },
    # What a handover means changed: this code reads only version 2.
    "handover-v2": {"handover.py": "\nHANDOVER_VERSION = 2\n"},
}


def repack(deb: pathlib.Path, into: pathlib.Path, serial: int, appends: dict[str, str]) -> str:
    """A build of `deb` with a higher version (package and circus_sd.__version__) and code
    appended to some of its modules; its file name in `into`."""
    tree = into / f"tree{serial}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    old = re.search(r"^Version: (\S+)$", control.read_text(), re.M)
    assert old is not None
    version = f"{old.group(1)}+reexec{serial}"
    control.write_text(control.read_text().replace(old.group(0), f"Version: {version}"))
    init = tree / PACKAGE_DIR / "__init__.py"
    source = init.read_text()
    assert f'__version__ = "{old.group(1)}"' in source, source
    init.write_text(source.replace(old.group(1), version))
    changed = [f"{PACKAGE_DIR}/__init__.py"]
    for name, code in appends.items():
        module = tree / PACKAGE_DIR / name
        module.write_text(module.read_text() + code)
        changed.append(f"{PACKAGE_DIR}/{name}")
    digests = subprocess.run(
        ["md5sum", *changed], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.splitlines(keepends=True)
    by_path = {line.split("  ", 1)[1]: line for line in digests}
    md5sums = tree / "DEBIAN" / "md5sums"
    md5sums.write_text("".join(
        by_path.get(line.split("  ", 1)[1], line)
        for line in md5sums.read_text().splitlines(keepends=True)
    ))
    out = into / f"circus-sd_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)],
        check=True, capture_output=True,
    )
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    return out.name


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, str]]:
    """The directory of the builds, and each one's file name."""
    base = DEBS / os.path.basename(the_deb())
    into = tmp_path_factory.mktemp("builds")
    names = {}
    appends: dict[str, str] = {}
    for serial, (what, more) in enumerate(BUILDS.items(), 1):
        appends = {**appends, **more}
        names[what] = repack(base, into, serial, appends)
    return into, names


def version_of(deb_name: str) -> str:
    return deb_name.split("_")[1]


@pytest.fixture(scope="module")
def bed(builds: tuple[pathlib.Path, dict[str, str]]) -> Iterator[System]:
    binds = [(str(DEBS), INSIDE, True), (str(builds[0]), NEWER_INSIDE, True)]
    with SystemdContainer(binds=binds) as ct:
        system = System(ct)
        dpkg(system, "dpkg", "-i", the_deb())
        system.write(WRITER, WRITER_CODE)
        system.write(CONF, CONFIG)
        yield system
        system.systemctl("stop", "circus-sd.service", timeout=120)
        assert pids(system, SLEEPER_CMD) == [], "a sleeper survived the stop"
        assert pids(system, WRITER_CMD) == [], "the writer survived the stop"


def pids(system: System, pattern: str) -> list[int]:
    return sorted(int(p) for p in system.sh(f"pgrep -f '{pattern}' || true").split())


def workload(system: System) -> list[int]:
    return pids(system, SLEEPER_CMD) + pids(system, WRITER_CMD)


def started_afresh(system: System) -> dict[str, str]:
    """The service restarted (a new invocation) with the 100 processes running and the writer's
    lines reaching the journal. The unit's MainPID, InvocationID and the workload's pids."""
    rc, out = system.systemctl("restart", "circus-sd.service", timeout=120)
    assert rc == 0, out
    system.wait_until(lambda: system.show("StatusText") == FULL_STATUS, 60, FULL_STATUS)
    system.wait_until(lambda: len(workload(system)) == SLEEPERS + 1, 30, "100 processes")
    unit = {p: system.show(p) for p in ("MainPID", "InvocationID")}
    system.wait_until(lambda: sequence(system, unit["InvocationID"]) != [], 30, "writer's lines")
    return unit


def sequence(system: System, invocation: str) -> list[int]:
    """The writer's numbers in the journal, in the order the journal has them."""
    # Its output (the arbiter's lines about it have WATCHER=writer too, not its identifier).
    entries = system.journal(
        f"_SYSTEMD_INVOCATION_ID={invocation}", "WATCHER=writer", "SYSLOG_IDENTIFIER=writer"
    )
    found = []
    for entry in entries:
        message = entry.get("MESSAGE", "")
        match = re.fullmatch(r"seq (\d+)", message) if isinstance(message, str) else None
        assert match is not None, f"a writer line cut or mangled: {message!r}"
        found.append(int(match.group(1)))
    return found


def while_sampling(
    system: System, command: str, timeout: float = 120
) -> tuple[int, str, list[str]]:
    """Run `command` in the container while sampling the unit's ActiveState/SubState as fast as
    systemctl answers (and a few times after): (exit status, its output, the samples)."""
    sample = "systemctl show --value -p ActiveState,SubState circus-sd.service | paste -sd/"
    script = f"""
        ( {command} ) > /tmp/sampled.out 2>&1 & c=$!
        : > /tmp/states
        while kill -0 $c 2>/dev/null; do {sample} >> /tmp/states; done
        wait $c; rc=$?
        for i in 1 2 3 4 5; do {sample} >> /tmp/states; done
        echo $rc; cat /tmp/states
    """
    rc_and_states = system.sh(script, timeout=timeout).split()
    output = system.sh("cat /tmp/sampled.out")
    return int(rc_and_states[0]), output, rc_and_states[1:]


def reexec_lines(system: System, invocation: str) -> list[str]:
    entries = system.journal(f"_SYSTEMD_INVOCATION_ID={invocation}", f"MESSAGE_ID={REEXEC_ID}")
    return [e["MESSAGE"] for e in entries]


def global_options(system: System) -> dict[str, object]:
    reply = json.loads(system.sh("circusctl --json globaloptions"))
    assert reply["status"] == "ok", reply
    options: dict[str, object] = reply["options"]
    return options


def assert_nothing_restarted(system: System, unit: dict[str, str], before: list[int]) -> None:
    assert {p: system.show(p) for p in unit} == unit  # same MainPID, same invocation
    assert system.show("ActiveState") == "active"
    assert system.show("NRestarts") == "0"
    assert workload(system) == before
    parents = set(system.sh(f"ps -o ppid= -p {','.join(map(str, before))}").split())
    assert parents == {unit["MainPID"]}  # still the arbiter's children
    system.wait_until(lambda: system.show("StatusText") == FULL_STATUS, 30, FULL_STATUS)


def assert_writer_unbroken(system: System, invocation: str, since: int) -> None:
    """The writer's lines, from its first to well after the switch: each number once, in order."""
    seen: list[int] = []

    def past_the_switch() -> bool:
        seen[:] = sequence(system, invocation)
        return max(seen) > since + 100

    system.wait_until(past_the_switch, 30, "the writer's lines after the switch")
    assert seen == list(range(seen[0], seen[-1] + 1)), (
        f"lost or duplicated: {sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))[:10]} "
        f"missing, {len(seen) - len(set(seen))} duplicated"
    )


def test_circusctl_reexec_keeps_main_pid_processes_and_output(bed: System) -> None:
    unit = started_afresh(bed)
    before = workload(bed)
    last = max(sequence(bed, unit["InvocationID"]))

    started = time.monotonic()
    rc, out, states = while_sampling(bed, "circusctl reexec")
    took = time.monotonic() - started
    print(f"circusctl reexec with {len(before)} processes: {took:.2f} s, "
          f"{len(states)} samples of the unit's state: {sorted(set(states))}")

    assert rc == 0, out
    assert set(states) <= ALLOWED_STATES, states
    assert_nothing_restarted(bed, unit, before)
    assert global_options(bed)["generation"] == 1
    assert reexec_lines(bed, unit["InvocationID"]) == [
        "INFO re-executing circus-sd (asked by circusctl reexec); every process stays",
        f"INFO re-executed (asked by circusctl reexec): circus-sd {global_options(bed)['version']} "
        f"took over {SLEEPERS + 1} process(es) of 2 watcher(s)",
    ]
    assert_writer_unbroken(bed, unit["InvocationID"], last)


def test_a_failure_of_the_arbiter_reexecutes_it_under_systemd(bed: System) -> None:
    bed.dropin("[Service]\nEnvironment=CIRCUS_SD_INJECT_FAULT=reload\n")
    try:
        unit = started_afresh(bed)
        before = workload(bed)
        last = max(sequence(bed, unit["InvocationID"]))
        after_line = "INFO re-executed (after a failure of the arbiter)"
        # Sampled until the new program says it took over (a wait on the journal, bounded).
        waited = (
            f"kill -HUP {unit['MainPID']}; for i in $(seq 300); do "
            f"journalctl -q --no-pager -o cat _SYSTEMD_INVOCATION_ID={unit['InvocationID']} "
            f"MESSAGE_ID={REEXEC_ID} | grep -qF '{after_line}' && exit 0; sleep 0.1; done; exit 1"
        )
        rc, out, states = while_sampling(bed, waited)
        assert rc == 0, f"no {after_line!r} in the journal within 30 s: {out}"
        assert set(states) <= ALLOWED_STATES, states
        bed.wait_until(lambda: global_options(bed)["generation"] == 1, 30, "generation 1")
        assert_nothing_restarted(bed, unit, before)
        entries = bed.journal(f"_SYSTEMD_INVOCATION_ID={unit['InvocationID']}", "PRIORITY=2")
        critical = [e["MESSAGE"] for e in entries]
        assert any(
            m.startswith("CRITICAL the arbiter failed; re-executing it with its state")
            for m in critical
        ), critical
        assert any("injected fault at reload" in m for m in critical), critical  # the traceback
        lines = reexec_lines(bed, unit["InvocationID"])
        assert lines[0] == (
            "INFO re-executing circus-sd (after a failure of the arbiter); every process stays"
        )
        assert lines[1].startswith(after_line), lines
        assert_writer_unbroken(bed, unit["InvocationID"], last)
    finally:
        bed.sh("rm -rf /etc/systemd/system/circus-sd.service.d")
        bed.systemctl("daemon-reload")


SLOW_HOOK = "/etc/circus-sd/conf.d/slowhook.py"
SLOW_HOOK_CODE = """\
import time


def wait(watcher, arbiter, hook_name, **kwargs):
    time.sleep(5)
    return True
"""


def test_the_watchdog_is_fed_while_a_switch_waits_for_a_hook(bed: System) -> None:
    # WatchdogSec=2, and a before_stop hook of 5 s in flight when `reexec` comes: the switch
    # waits for the hook, well past the watchdog's 2 s. systemd must not kill the arbiter for
    # it (which would kill and restart every process).
    bed.write(SLOW_HOOK, SLOW_HOOK_CODE)
    bed.write(CONF, CONFIG + "hooks.before_stop = slowhook.wait\n")  # on [watcher:writer]
    bed.dropin("[Service]\nWatchdogSec=2\n")
    try:
        unit = started_afresh(bed)
        sleepers = pids(bed, SLEEPER_CMD)
        bed.sh("circusctl stop writer")  # without --waiting: its hook runs 5 s from now
        started = time.monotonic()
        rc, out, states = while_sampling(bed, "circusctl --timeout 30 reexec")
        took = time.monotonic() - started
        assert rc == 0, out
        assert took > 3.0, f"reexec took {took:.2f} s: it did not wait for the hook"
        assert set(states) <= ALLOWED_STATES, states
        assert {p: bed.show(p) for p in unit} == unit  # same MainPID, same invocation
        assert bed.show("NRestarts") == "0"
        assert pids(bed, SLEEPER_CMD) == sleepers
        bed.wait_until(lambda: pids(bed, WRITER_CMD) == [], 30, "the writer to be stopped")
        assert global_options(bed)["generation"] == 1
    finally:
        bed.write(CONF, CONFIG)
        bed.sh(f"rm -rf /etc/systemd/system/circus-sd.service.d {SLOW_HOOK}")
        bed.systemctl("daemon-reload")


def upgrade(system: System, deb_name: str) -> tuple[str, list[str]]:
    """`dpkg -i` of one of the builds, the unit's states sampled meanwhile: (output, states)."""
    started = time.monotonic()
    rc, out, states = while_sampling(
        system, f"DEBIAN_FRONTEND=noninteractive dpkg -i {NEWER_INSIDE}/{deb_name}", timeout=300
    )
    print(f"dpkg -i {deb_name}: {time.monotonic() - started:.1f} s")
    assert rc == 0, out
    assert system.sh("dpkg-query -W -f '${Version}' circus-sd") == version_of(deb_name)
    return out, states


def test_dpkg_i_of_a_newer_build_reexecutes_the_running_service(
    bed: System, builds: tuple[pathlib.Path, dict[str, str]]
) -> None:
    deb_name = builds[1]["newer"]
    version = version_of(deb_name)
    unit = started_afresh(bed)
    before = workload(bed)
    last = max(sequence(bed, unit["InvocationID"]))
    assert global_options(bed)["version"] != version

    out, states = upgrade(bed, deb_name)

    assert SAID_REEXECUTED in out.splitlines(), out
    assert set(states) <= ALLOWED_STATES, states
    assert_nothing_restarted(bed, unit, before)
    options = global_options(bed)
    assert (options["version"], options["generation"]) == (version, 1)
    assert reexec_lines(bed, unit["InvocationID"])[-1] == (
        f"INFO re-executed (asked by circusctl reexec): circus-sd {version} "
        f"took over {SLEEPERS + 1} process(es) of 2 watcher(s)"
    )
    assert_writer_unbroken(bed, unit["InvocationID"], last)


def started_running(system: System) -> tuple[dict[str, str], list[int], str]:
    """`started_afresh`, with the workload's pids and the version the arbiter runs."""
    unit = started_afresh(system)
    running = global_options(system)["version"]
    assert isinstance(running, str)
    return unit, workload(system), running


def assert_not_reexecuted(
    bed: System, out: str, running: str, why: str, unit: dict[str, str], before: list[int]
) -> None:
    """The upgrade said that, and why, the arbiter was not re-executed; the old code goes on,
    nothing restarted."""
    said = [line for line in out.splitlines() if line.startswith("circus-sd: ")]
    assert said == [
        f"circus-sd: upgraded from {running} but not re-executed ({why}); the running service "
        "keeps the old code until you restart it (systemctl restart circus-sd, which restarts "
        "every watcher)."
    ], out
    assert_nothing_restarted(bed, unit, before)
    options = global_options(bed)
    assert (options["version"], options["generation"]) == (running, 0)
    assert reexec_lines(bed, unit["InvocationID"]) == []


def test_an_upgrade_where_policy_rc_d_forbids_it_does_not_reexecute_and_says_so(
    bed: System, builds: tuple[pathlib.Path, dict[str, str]]
) -> None:
    unit, before, running = started_running(bed)
    # The installed build again: an upgrade for dpkg (configure with the old version).
    (deb_name,) = [name for name in builds[1].values() if version_of(name) == running]
    # What chroots and image builders install so that packages leave services alone.
    bed.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
    bed.sh("chmod +x /usr/sbin/policy-rc.d")
    try:
        out, states = upgrade(bed, deb_name)
    finally:
        bed.sh("rm -f /usr/sbin/policy-rc.d")
    assert set(states) == {"active/running"}, states
    assert_not_reexecuted(
        bed, out, running, "policy-rc.d forbids acting on the service", unit, before
    )


REFUSAL_ROUNDS = 20


def test_a_build_that_cannot_take_over_is_refused_every_time_and_the_upgrade_says_so(
    bed: System, builds: tuple[pathlib.Path, dict[str, str]]
) -> None:
    deb_name = builds[1]["other-shape"]
    unit, before, running = started_running(bed)
    # The new files without the postinst, then `reexec` asked again and again: each time the new
    # code refuses the state (the check's exit is the arbiter's to wait for, never a stray's).
    dpkg(bed, "dpkg", "--unpack", f"{NEWER_INSIDE}/{deb_name}")
    refusal = (
        "reexec refused: circus-sd: watcher 'sleepers': its state has another shape here "
        "(missing: added_by_a_newer_build; unknown: -)"
    )
    for attempt in range(REFUSAL_ROUNDS):
        result = bed.ct.run("circusctl", "--timeout", "10", "reexec", unit=False, timeout=60)
        assert (result.returncode, result.stderr.strip()) == (3, f"error: {refusal}"), (
            f"attempt {attempt + 1}: {result}; unit {unit} now "
            f"{ {p: bed.show(p) for p in unit} }, NRestarts {bed.show('NRestarts')}"
        )
    out = dpkg(bed, "dpkg", "--configure", "circus-sd")
    assert_not_reexecuted(bed, out, running, f"error: {refusal}", unit, before)


def test_a_build_with_another_handover_version_is_refused(
    bed: System, builds: tuple[pathlib.Path, dict[str, str]]
) -> None:
    deb_name = builds[1]["handover-v2"]
    unit, before, running = started_running(bed)
    out, _states = upgrade(bed, deb_name)
    assert_not_reexecuted(
        bed, out, running,
        f"error: reexec refused: circus-sd: saved state version 1 (circus-sd {running}); "
        "this circus-sd reads version 2",
        unit, before,
    )
