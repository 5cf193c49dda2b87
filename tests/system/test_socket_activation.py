"""Socket activation: systemd binds a port below 1024 on loopback and hands it to circus-sd."""

from __future__ import annotations

import json

from conftest import ROOT, System

SOCKET_UNIT = ROOT / "packaging" / "systemd" / "circus-sd.socket"
ACCEPTOR = "/usr/bin/python3 /opt/children/acceptor.py"
# One connection to 127.0.0.1:80: the pid of the worker that answered it.
ASK = (
    "python3 -c 'import socket; c = socket.create_connection((\"127.0.0.1\", 80), timeout=30); "
    "c.sendall(b\"hello\\n\"); print(c.recv(100).decode().strip())'"
)

CONFIG = f"""
[socket:web]
host = 127.0.0.1
port = 80

[watcher:web]
cmd = {ACCEPTOR} /run web $(circus.wid) fd:$(circus.sockets.web)
use_sockets = true
numprocesses = 2
graceful_timeout = 5
"""


def shipped_socket_unit() -> str:
    """The example unit as shipped, on loopback only."""
    text = SOCKET_UNIT.read_text()
    assert "\nListenStream=80\n" in text
    return text.replace("\nListenStream=80\n", "\nListenStream=127.0.0.1:80\n")


def ask(system: System) -> int:
    return int(system.sh(ASK, timeout=60).strip())


def messages(system: System) -> list[str]:
    return [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]


def test_a_socket_unit_activates_circus_sd_and_its_watcher_serves_on_the_socket(
    system: System,
) -> None:
    system.configure(CONFIG)
    system.write("/etc/systemd/system/circus-sd.socket", shipped_socket_unit())
    system.systemctl("daemon-reload")
    try:
        rc, out = system.systemctl("start", "circus-sd.socket")
        assert rc == 0, out
        assert system.show("ActiveState") == "inactive"
        # The first connection starts circus-sd; it waits in systemd's socket meanwhile.
        first = ask(system)
        assert system.show("ActiveState") == "active"
        workers = system.pids_of("acceptor.py")
        assert first in workers and len(workers) == 2
        # Adopted, not bound: circus-sd could not have bound port 80 next to systemd's socket.
        assert any("[socket:web] adopted from systemd: fd 3, 127.0.0.1:80" in m
                   for m in messages(system))
        listed = json.loads(system.sh("circusctl --json listsockets"))["sockets"]
        assert [(s["name"], s["host"], s["port"], s["systemd"]) for s in listed] == [
            ("web", "127.0.0.1", 80, True)
        ]

        # A restart of circus-sd drops nothing: the socket stays with systemd.
        rc, out = system.systemctl("restart", "circus-sd.service")
        assert rc == 0, out
        again = ask(system)
        assert again in system.pids_of("acceptor.py") and again not in workers

        # Stopped, the service is started again by the next connection.
        assert system.systemctl("stop", "circus-sd.service")[0] == 0
        assert system.show("ActiveState") == "inactive"
        assert not system.pids_of("acceptor.py")
        assert ask(system) in system.pids_of("acceptor.py")
        assert system.show("ActiveState") == "active"
    finally:
        system.systemctl("stop", "circus-sd.socket", "circus-sd.service")
        system.sh("rm -f /etc/systemd/system/circus-sd.socket /run/web.*.json")
        system.systemctl("daemon-reload")
    assert not system.pids_of("acceptor.py")


CONTROL_SOCKET_UNIT = """\
[Socket]
ListenStream=/run/circus-sd-control.sock
SocketMode=0600
FileDescriptorName=control
Service=circus-sd.service
"""


def test_the_control_endpoint_can_be_a_socket_systemd_passes(system: System) -> None:
    system.configure("""
[circus]
endpoint = systemd:control

[watcher:sleeper]
cmd = sleep 600
""")
    system.write("/etc/systemd/system/circus-sd-control.socket", CONTROL_SOCKET_UNIT)
    system.systemctl("daemon-reload")
    ctl = "circusctl --endpoint ipc:///run/circus-sd-control.sock"
    try:
        rc, out = system.systemctl("start", "circus-sd-control.socket")
        assert rc == 0, out
        assert system.show("ActiveState") == "inactive"
        # The first command starts circus-sd; systemd holds the connection meanwhile. (It is
        # answered as soon as the arbiter listens, maybe while its watchers still start.)
        assert system.sh(f"{ctl} --timeout 30 numwatchers").strip() == "1"
        system.wait_until(lambda: system.show("ActiveState") == "active", 10, "circus-sd active")
        assert system.sh(f"{ctl} status sleeper").strip() == "active"
        assert any("systemd:control: adopted from systemd as ipc:///run/circus-sd-control.sock"
                   in m for m in messages(system))
        # systemd's socket, systemd's mode: root only.
        assert system.sh("stat -c %a /run/circus-sd-control.sock").strip() == "600"
        # The output socket lies beside it, private too.
        assert system.sh("stat -c %a /run/circus-sd-control-output.sock").strip() == "600"
        # A restart keeps the socket: commands work again without anyone binding it.
        assert system.systemctl("restart", "circus-sd.service")[0] == 0
        assert system.sh(f"{ctl} numwatchers").strip() == "1"
    finally:
        system.systemctl("stop", "circus-sd-control.socket", "circus-sd.service")
        system.sh("rm -f /etc/systemd/system/circus-sd-control.socket")
        system.systemctl("daemon-reload")
