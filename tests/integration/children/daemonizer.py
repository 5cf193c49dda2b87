"""A worker that starts a daemon the classic way: `daemonizer.py OUTDIR NAME WID [OPTION...]`.

fork, setsid, fork again, the middle process exits: the daemon is orphaned and adopted by the
nearest subreaper. It appends its pid to OUTDIR/NAME.daemons. Once the daemon reported, the
worker writes OUTDIR/NAME.WID.json with the daemon's pid (and its child's). Options:
  --with-child    the daemon runs a `sleep` of its own
  --keep-session  no setsid: the daemon stays in the worker's session
  --ignore-term   the daemon ignores SIGTERM
  --exit          the worker exits 0.3 s after its report (to be started again)
"""

import json
import os
import signal
import subprocess
import sys
import time

outdir, name, wid = sys.argv[1:4]
ready_read, ready_write = os.pipe()
middle = os.fork()
if middle == 0:
    if "--keep-session" not in sys.argv:
        os.setsid()
    if os.fork() == 0:
        os.close(ready_read)
        if "--ignore-term" in sys.argv:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = 0
        if "--with-child" in sys.argv:
            child = subprocess.Popen(["sleep", "300"], close_fds=True).pid
        with open(os.path.join(outdir, f"{name}.daemons"), "a") as daemons:
            daemons.write(f"{os.getpid()}\n")
        os.write(ready_write, f"{os.getpid()} {child}\n".encode())
        os.close(ready_write)
        while True:
            signal.pause()
    os._exit(0)
os.close(ready_write)
os.waitpid(middle, 0)
with os.fdopen(ready_read) as pipe:
    daemon, child = (int(word) for word in pipe.readline().split())
report = {"pid": os.getpid(), "daemon": daemon, "daemon_child": child or None}
final = os.path.join(outdir, f"{name}.{wid}.json")
with open(final + ".tmp", "w") as f:
    json.dump(report, f)
os.replace(final + ".tmp", final)
if "--exit" in sys.argv:
    time.sleep(0.3)
    sys.exit(0)
while True:
    signal.pause()
