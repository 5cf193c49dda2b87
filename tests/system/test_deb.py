"""The Debian package (make deb) installed, used, upgraded, removed and purged under systemd.

It runs in a container of its own: the other system tests install circus-sd from a wheel into
/usr/local (which would shadow the package's /usr/lib/python3/dist-packages) and put their own
unit in /etc/systemd/system. The tests run in file order, as an operator would: each one starts
from what the previous one left.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator

import pytest
from conftest import ROOT, UNIT, System
from tbcontainer import SystemdContainer

from circus_sd.ctl.commandline import known_commands

DEBS = ROOT / ".build" / "deb"
INSIDE = "/opt/circus-sd/deb"
CONF_D = "/etc/circus-sd/conf.d"
HELLO = """\
[watcher:hello]
cmd = /bin/sh -c 'while true; do echo "hello from $CIRCUS_WID"; sleep 0.5; done'
numprocesses = 2
graceful_timeout = 2
"""
HELLO_CMD = "^/bin/sh -c while true; do echo .hello from"
MEMBER = "alice"
# The arbiter and its spawner; the brackets keep pgrep's own shell from matching.
ARBITER = "[c]ircus[-_]sd"


def the_deb() -> str:
    debs = sorted(DEBS.glob("circus-sd_*_all.deb"))
    if not debs:
        why = f"no circus-sd .deb in {DEBS} (make deb builds it)"
        if os.environ.get("CIRCUS_SD_REQUIRE_SYSTEM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return f"{INSIDE}/{debs[-1].name}"


@pytest.fixture(scope="module")
def deb() -> str:
    return the_deb()


@pytest.fixture(scope="module")
def debsystem(deb: str) -> Iterator[System]:
    with SystemdContainer(binds=[(str(DEBS), INSIDE, True)]) as ct:
        yield System(ct)


def pgrep(system: System, pattern: str) -> list[int]:
    return [int(p) for p in system.sh(f"pgrep -f '{pattern}' || true").split()]


def as_user(system: System, user: str, command: str) -> tuple[int, str]:
    """(exit status, stdout and stderr) of COMMAND run as USER (runuser: with its groups)."""
    # As a transient unit (systemd-run): a clean environment, working directory /.
    result = system.ct.run("sh", "-c", f"runuser -u {user} -- {command}", timeout=30)
    return result.returncode, result.stdout + result.stderr


def dpkg(system: System, *args: str, timeout: float = 180) -> str:
    start = time.monotonic()
    out = system.sh(
        "DEBIAN_FRONTEND=noninteractive " + " ".join(args) + " 2>&1", timeout=timeout
    )
    print(f"{' '.join(args)}: {time.monotonic() - start:.1f} s")
    return out


def test_the_package_holds_the_commands_unit_config_docs_and_completion(deb: str) -> None:
    path = DEBS / os.path.basename(deb)
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(path)], capture_output=True, text=True, check=True
    ).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    assert files >= {
        "/usr/bin/circus-sd",
        "/usr/bin/circusctl",
        "/lib/systemd/system/circus-sd.service",
        "/etc/circus-sd/circus.ini",
        "/etc/circus-sd/conf.d/",
        "/usr/share/bash-completion/completions/circusctl",
        "/usr/share/man/man1/circus-sd.1.gz",
        "/usr/share/man/man1/circusctl.1.gz",
        "/usr/share/doc/circus-sd/README.md",  # not compressed: the unit's Documentation=
        "/usr/share/doc/circus-sd/copyright",
    }
    tree = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
        shipped = tar.extractfile("./lib/systemd/system/circus-sd.service")
        assert shipped is not None
        assert shipped.read() == UNIT.read_bytes()  # the one in packaging/systemd/
        page = tar.extractfile("./usr/share/man/man1/circusctl.1.gz")
        assert page is not None
        man = gzip.decompress(page.read()).decode()
    assert ".SH COMMANDS" in man
    for command in known_commands():
        assert ".B circusctl " + command.replace("-", "\\-") in man  # roff's hyphen


def test_install_enables_and_starts_the_service(debsystem: System, deb: str) -> None:
    out = dpkg(debsystem, "dpkg", "-i", deb)
    assert "circus-sd" in out
    assert debsystem.systemctl("is-enabled", "circus-sd.service") == (0, "enabled\n")
    assert debsystem.show("ActiveState") == "active"
    assert debsystem.show("SubState") == "running"
    assert debsystem.show("StatusText") == "0/0 watchers active, 0 processes"
    # The package's code, from Debian's python3 and dist-packages.
    assert debsystem.sh("head -1 /usr/bin/circus-sd").strip() == "#!/usr/bin/python3"
    assert debsystem.sh("python3 -c 'import circus_sd; print(circus_sd.__file__)'").startswith(
        "/usr/lib/python3/dist-packages/circus_sd/"
    )
    assert debsystem.sh("circus-sd --version").startswith("circus-sd ")
    assert "Controls a circus-sd" in debsystem.sh("circusctl --help")
    # The shipped configuration: a conffile, no watcher, the group, the drop-in directory.
    assert debsystem.sh("cat /var/lib/dpkg/info/circus-sd.conffiles").split() == [
        "/etc/circus-sd/circus.ini"
    ]
    check = debsystem.sh("circus-sd --check /etc/circus-sd/circus.ini 2>&1")
    assert "OK, 0 watcher(s)" in check, check
    assert "warning" not in check.lower(), check  # not even for the empty conf.d/
    arbiter_log = debsystem.journal("_SYSTEMD_UNIT=circus-sd.service")
    assert not [e["MESSAGE"] for e in arbiter_log if int(e.get("PRIORITY", 6)) <= 4]
    assert debsystem.sh(f"stat -c '%U:%G %a' {CONF_D}").strip() == "root:root 755"
    assert debsystem.sh("getent group circus-sd").startswith("circus-sd:")
    # The control socket belongs to root and the group, nobody else.
    assert debsystem.sh("stat -c '%U:%G %a' /run/circus-sd/control.sock").strip() == (
        "root:circus-sd 660"
    )
    assert debsystem.sh("dpkg -L circus-sd | grep completions/").split() == [
        "/usr/share/bash-completion/completions/circusctl"
    ]


def test_a_watcher_dropped_into_conf_d_runs_after_a_reload(debsystem: System) -> None:
    main_pid = debsystem.show("MainPID")
    debsystem.write(f"{CONF_D}/hello.ini", HELLO)
    rc, out = debsystem.systemctl("reload", "circus-sd.service")
    assert rc == 0, out
    assert debsystem.show("MainPID") == main_pid
    assert debsystem.show("StatusText") == "1/1 watchers active, 2 processes"
    pids = pgrep(debsystem, HELLO_CMD)
    assert len(pids) == 2
    for pid in pids:
        assert debsystem.sh(f"ps -o ppid= -p {pid}").strip() == main_pid


def test_circusctl_works_for_root_and_the_group_and_is_refused_to_others(
    debsystem: System,
) -> None:
    assert debsystem.sh("circusctl status").strip() == "hello: active"
    debsystem.sh(f"useradd --no-create-home --groups circus-sd {MEMBER}")
    # A member needs no --endpoint: circusctl finds the service's socket.
    assert as_user(debsystem, MEMBER, "circusctl status") == (0, "hello: active\n")
    assert as_user(debsystem, MEMBER, "circusctl incr hello --waiting")[0] == 0
    assert as_user(debsystem, MEMBER, "circusctl numprocesses hello") == (0, "3\n")
    assert as_user(debsystem, MEMBER, "circusctl decr hello --waiting")[0] == 0
    # ... but may not change what runs, or stop the arbiter.
    rc, out = as_user(debsystem, MEMBER, "circusctl quit")
    assert rc == 3 and "access denied" in out, out
    rc, out = as_user(debsystem, MEMBER, "circusctl add intruder /bin/sleep 600")
    assert rc == 3 and "access denied" in out, out
    for how in ("runuser -u nobody --", "setpriv --reuid=nobody --regid=nogroup --clear-groups"):
        for command in ("status", "--endpoint ipc:///run/circus-sd/control.sock status"):
            result = debsystem.ct.run("sh", "-c", f"{how} circusctl {command}", timeout=30)
            assert result.returncode == 1, (how, command, result.stdout, result.stderr)
            assert result.stdout == ""
            assert "permission denied on /run/circus-sd/control.sock" in result.stderr
    assert debsystem.show("StatusText") == "1/1 watchers active, 2 processes"


def test_the_journal_has_each_watchers_output_with_its_fields(debsystem: System) -> None:
    main_pid = debsystem.show("MainPID")
    pids = {str(pid) for pid in pgrep(debsystem, HELLO_CMD)}
    entries: list[dict[str, str]] = []

    def both_workers_logged() -> bool:
        entries[:] = debsystem.journal("-u", "circus-sd", "WATCHER=hello")
        return {e.get("MESSAGE") for e in entries} >= {"hello from 1", "hello from 2"}

    debsystem.wait_until(both_workers_logged, 10, "both workers' lines in the journal")
    entry = next(e for e in reversed(entries) if e.get("MESSAGE") == "hello from 2")
    assert entry["WID"] == "2"
    assert entry["SYSLOG_IDENTIFIER"] == "hello"
    assert entry["PRIORITY"] == "6"
    assert entry["_SYSTEMD_UNIT"] == "circus-sd.service"
    assert entry["_PID"] == main_pid  # sent by the arbiter, on behalf of:
    assert entry["CHILD_PID"] in pids
    assert entry["OBJECT_PID"] == entry["CHILD_PID"]
    # The operator's command line, as the README gives it (a loaded machine may lag behind).
    lines: list[str] = []

    def three_lines() -> bool:
        lines[:] = debsystem.sh(
            "journalctl --no-pager -u circus-sd -o cat WATCHER=hello WID=1 -n 3"
        ).splitlines()
        return len(lines) == 3

    debsystem.wait_until(three_lines, 10, "3 lines of hello[1] in the journal")
    assert lines == ["hello from 1"] * 3, lines


def test_bash_completion_lists_commands_and_watchers(debsystem: System) -> None:
    def complete(line: str) -> list[str]:
        script = (
            "source /usr/share/bash-completion/completions/circusctl; "
            f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _circusctl; '
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        return debsystem.sh(f"bash -c '{script}'").split()

    assert complete("circusctl st") == ["start", "stats", "status", "stop"]
    assert complete("circusctl status ") == ["hello"]
    assert complete("circusctl stop --match ") == ["simple", "glob", "regex"]
    assert "--waiting" in complete("circusctl incr hello --")


def test_an_upgrade_re_executes_the_running_service_in_place_and_says_so(
    debsystem: System, deb: str
) -> None:
    main_pid = debsystem.show("MainPID")
    pids = sorted(pgrep(debsystem, HELLO_CMD))
    out = dpkg(debsystem, "dpkg", "-i", deb)  # the same version again: an upgrade for dpkg
    done = "circus-sd: re-executed in place with the new version; no process was restarted."
    assert done in out.splitlines(), out
    assert debsystem.show("ActiveState") == "active"
    assert debsystem.show("MainPID") == main_pid
    assert sorted(pgrep(debsystem, HELLO_CMD)) == pids
    assert debsystem.show("NRestarts") == "0"


def test_remove_stops_the_service_and_leaves_no_process(debsystem: System) -> None:
    main_pid = int(debsystem.show("MainPID"))
    children = pgrep(debsystem, HELLO_CMD)
    dpkg(debsystem, "apt-get", "remove", "--yes", "circus-sd")
    assert debsystem.sh("dpkg-query -W -f '${db:Status-Status}' circus-sd") == "config-files"
    assert debsystem.show("ActiveState") in ("inactive", "")
    for pid in (main_pid, *children):
        assert debsystem.sh(f"test -e /proc/{pid} && echo alive || true").strip() == ""
    assert pgrep(debsystem, ARBITER) == []
    assert pgrep(debsystem, HELLO_CMD) == []
    assert debsystem.sh("test -e /run/circus-sd && echo left || true").strip() == ""
    assert debsystem.sh("test -e /usr/bin/circus-sd && echo left || true").strip() == ""
    # remove keeps the configuration (and the watcher dropped in).
    assert debsystem.sh("ls /etc/circus-sd/ /etc/circus-sd/conf.d").split() == [
        "/etc/circus-sd/:",
        "circus.ini",
        "conf.d",
        "/etc/circus-sd/conf.d:",
        "hello.ini",
    ]


def test_reinstall_then_purge_removes_config_and_group(debsystem: System, deb: str) -> None:
    # The README's command; apt resolves the dependencies from what is installed (no network).
    dpkg(debsystem, "apt-get", "install", "--yes", "--no-install-recommends", deb)
    assert debsystem.show("ActiveState") == "active"
    assert debsystem.show("StatusText") == "1/1 watchers active, 2 processes"
    assert debsystem.systemctl("is-enabled", "circus-sd.service") == (0, "enabled\n")
    # The group keeps its members; purge deletes it only when it has none.
    debsystem.sh(f"userdel {MEMBER}")
    dpkg(debsystem, "apt-get", "purge", "--yes", "circus-sd")
    status = debsystem.sh("dpkg-query -W -f '${db:Status-Abbrev}' circus-sd 2>/dev/null || :")
    assert status.strip() in ("", "un"), status
    assert debsystem.sh("test -e /etc/circus-sd && echo left || true").strip() == ""
    assert debsystem.sh("getent group circus-sd || true").strip() == ""
    assert pgrep(debsystem, ARBITER) == []
    assert pgrep(debsystem, HELLO_CMD) == []
    left = debsystem.sh(
        "ls /lib/systemd/system/circus-sd.service /etc/systemd/system/*/circus-sd.service "
        "/var/lib/systemd/deb-systemd-helper-enabled/circus-sd.service* "
        "/var/lib/systemd/deb-systemd-helper-enabled/*/circus-sd.service 2>/dev/null || true"
    )
    assert left.strip() == ""
