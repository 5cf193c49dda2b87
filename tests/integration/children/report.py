"""A worker for the integration tests: reports who and where it is, then waits for signals.

Run as `python3 -S -E report.py OUTDIR NAME WID [options]`. Its first action is to record the
identity, limits and environment it was started with (nothing in Python's start-up changes them)
into OUTDIR/NAME.WID.json, written atomically, and to append the same report as one line to
OUTDIR/NAME.spawns: a history of every process of the watcher.
"""

import json
import os
import resource
import signal
import sys
import time


def snapshot(name: str, wid: str) -> dict[str, object]:
    # /proc/self/environ is exactly what execve received (Python may add LC_CTYPE to os.environ).
    with open("/proc/self/environ", "rb") as f:
        raw = f.read()
    env = dict(
        item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item
    )
    umask = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return {
        "name": name,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "wid": wid,
        "wid_env": os.environ.get("CIRCUS_WID"),
        "argv": sys.argv[1:],
        "monotonic": time.monotonic(),
        "uid": os.getresuid(),
        "gid": os.getresgid(),
        "groups": sorted(os.getgroups()),
        "umask": umask,
        "cwd": os.getcwd(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "env": env,
        "sid": os.getsid(0),
    }


def append_line(path: str, text: str) -> None:
    # One write on an O_APPEND file: lines from concurrent writers do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def main() -> None:
    outdir, name, wid = sys.argv[1:4]
    report = snapshot(name, wid)
    options = sys.argv[4:]
    if "--ignore-term" in options:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--log-term" in options:
        shared = options[options.index("--log-term") + 1]

        def on_term(signum: int, frame: object) -> None:
            append_line(shared, f"stopped {name}\n")
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
        append_line(shared, f"started {name}\n")
    if "--exit-on-usr1" in options:
        signal.signal(signal.SIGUSR1, lambda signum, frame: os._exit(0))
    text = json.dumps(report)
    final = os.path.join(outdir, f"{name}.{wid}.json")
    temporary = f"{final}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, final)
    append_line(os.path.join(outdir, f"{name}.spawns"), text + "\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
