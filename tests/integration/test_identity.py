"""What a process is started with: user, groups, umask, working directory, limits, environment."""

from __future__ import annotations

import grp
import os
import pwd
import resource

import psutil
import pytest
from arbiter_harness import Circus, report_command

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)

# The arbiter is started with this RLIMIT_NOFILE; it raises its own soft limit to the hard one.
ARBITER_NOFILE = (512, 4096)


def test_identity_limits_and_environment_from_the_config(circus: Circus) -> None:
    assert os.geteuid() == 0, "the integration tests run as root"
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup")
    world = circus.world_dir()
    config = circus.write_config(f"""
        [watcher:ident]
        cmd = {report_command(world, "ident")}
        uid = nobody
        gid = nogroup
        umask = 027
        working_dir = {world}
        rlimit_nofile = 100:200
        rlimit_core = 0
        copy_env = false

        [watcher:plain]
        cmd = {report_command(circus.tmp, "plain")}

        [watcher:copied]
        cmd = {report_command(circus.tmp, "copied")}
        copy_env = true

        [env]
        SHARED = for everyone

        [env:ident]
        GREETING = hello world
        WID_COPY = $(circus.wid)
        """)
    arbiter_env = {
        **os.environ,
        "NOTIFY_SOCKET": str(circus.tmp / "notify.sock"),
        "ARBITER_ONLY": "from the arbiter",
    }
    arbiter = circus.start(config, env=arbiter_env, nofile=ARBITER_NOFILE)
    ident = circus.reports_in(world).wait("ident", 1)
    plain = circus.reports.wait("plain", 1)
    copied = circus.reports.wait("copied", 1)

    assert ident["uid"] == [nobody.pw_uid] * 3, "real, effective and saved uid"
    assert ident["gid"] == [nogroup.gr_gid] * 3, "real, effective and saved gid"
    assert ident["groups"] == sorted(set(os.getgrouplist("nobody", nogroup.gr_gid)))
    assert 0 not in ident["groups"], "root's groups leaked into the process"
    assert ident["umask"] == 0o027
    assert ident["cwd"] == str(world)
    assert ident["nofile"] == [100, 200]
    assert ident["core"] == [0, 0]
    # Beside CIRCUS_WID, the marks a next arbiter finds its workers by (README "Live upgrade").
    marks = {"CIRCUS_SD_ARBITER": str(config.resolve())}
    assert ident["env"] == {
        "SHARED": "for everyone",
        "GREETING": "hello world",
        "WID_COPY": "1",
        "CIRCUS_WID": "1",
        **marks,
        "CIRCUS_SD_WATCHER": "ident",
    }

    # Without rlimit_nofile: the limit the arbiter was started with, not the one it raised.
    assert psutil.Process(arbiter.pid).rlimit(resource.RLIMIT_NOFILE) == (4096, 4096)
    assert tuple(plain["nofile"]) == ARBITER_NOFILE
    assert plain["env"] == {
        "SHARED": "for everyone", "CIRCUS_WID": "1", **marks, "CIRCUS_SD_WATCHER": "plain"
    }
    assert plain["cwd"] == str(circus.tmp), "the arbiter's working directory"

    assert copied["env"]["ARBITER_ONLY"] == "from the arbiter"
    assert copied["env"]["HOME"] == os.environ["HOME"]
    assert copied["env"]["CIRCUS_WID"] == "1"
    assert copied["env"]["SHARED"] == "for everyone"
    assert "NOTIFY_SOCKET" not in copied["env"], "the arbiter's own systemd socket leaked"
