"""A worker serving on a socket it was given: answers each connection with its own pid.

Run as `python3 acceptor.py OUTDIR NAME WID HOW`, HOW being `fd:N` (a socket at fd N, e.g. from
`$(circus.sockets.NAME)`), `stdin` (fd 0) or `listen_fds` (python3-systemd's
`systemd.daemon.listen_fds()`: LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). It first writes what it
got into OUTDIR/NAME.WID.json (atomically), then serves: it reads one line from a connection
and answers `PID\\n`. On SIGTERM it finishes the connection in hand, stops accepting and exits,
so that a restart drops no connection the kernel queued on the shared socket.
"""

import json
import os
import select
import signal
import socket
import sys


def sockets_for(how: str) -> list[socket.socket]:
    if how == "stdin":
        return [socket.socket(fileno=0)]
    if how == "listen_fds":
        from systemd import daemon  # python3-systemd, as a socket-activated program uses it

        return [socket.socket(fileno=fd) for fd in daemon.listen_fds(unset_environment=False)]
    return [socket.socket(fileno=int(how.partition(":")[2]))]


def describe(sock: socket.socket) -> dict[str, object]:
    name = sock.getsockname()
    return {
        "fd": sock.fileno(),
        "family": sock.family.name,
        "type": sock.type.name,
        "address": name if isinstance(name, str) else list(name),
        "blocking": os.get_blocking(sock.fileno()),
        "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1,
        "inode": os.fstat(sock.fileno()).st_ino,
    }


def serve_one(listener: socket.socket) -> None:
    try:
        conn, _addr = listener.accept()
    except BlockingIOError:
        return  # another worker took it
    with conn:
        conn.setblocking(True)
        conn.settimeout(5)
        try:
            conn.recv(100)
            conn.sendall(f"{os.getpid()}\n".encode())
        except OSError:
            pass


def main() -> None:
    outdir, name, wid, how = sys.argv[1:5]
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGTERM, on_term)
    listeners = sockets_for(how)
    report = {
        "pid": os.getpid(),
        "wid": wid,
        "argv": sys.argv[1:],
        "sockets": [describe(s) for s in listeners],
        "env": {k: v for k, v in os.environ.items() if k.startswith("LISTEN_")},
        "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    }
    final = os.path.join(outdir, f"{name}.{wid}.json")
    temporary = f"{final}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(report, f)
    os.replace(temporary, final)
    while not stopping:
        readable, _, _ = select.select([*listeners, wake_read], [], [])
        for listener in listeners:
            if listener in readable:
                serve_one(listener)
        if wake_read in readable:
            os.read(wake_read, 100)
    os._exit(0)


if __name__ == "__main__":
    main()
