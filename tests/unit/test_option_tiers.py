"""Option access tiers: declared with each option, decided on the keys as they will be applied."""

from __future__ import annotations

import dataclasses
import pwd

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circus_sd.access import Tier
from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import RLIMITS, options_of
from circus_sd.control.protocol import CommandError, Errno
from circus_sd.control.watcher_options import apply_options, option_values, parse_options

_OPTIONS = options_of(WatcherConfig)
ADMIN_KEYS = sorted(
    [key for key, (_field, declared) in _OPTIONS.items() if declared.tier is Tier.ADMIN]
    + ["env", *RLIMITS, "stdout_stream.filename", "stderr_stream.class", "hooks.after_start"]
)
# What a member of endpoint_group may change: a deliberate list, so that giving the group a new
# option shows up here in review.
OPERATE_KEYS = {
    "numprocesses", "warmup_delay", "autostart", "respawn", "priority", "singleton",
    "graceful_timeout", "stop_signal", "stop_children", "send_hup", "max_age", "max_age_variance",
    "max_retry", "min_uptime", "backoff_initial", "backoff_max", "check_flapping",
    "flapping.attempts", "flapping.window", "flapping.retry_in", "flapping.max_retry",
    "ready_timeout", "watchdog_sec", "hook_timeout",
}


def test_the_group_may_change_only_the_declared_timings_counts_and_limits() -> None:
    operate = {key for key, (_f, declared) in _OPTIONS.items() if declared.tier is Tier.OPERATE}
    assert operate == OPERATE_KEYS
    for key in ("cmd", "uid", "gid", "env", "working_dir", "ready_log_line", "shell",
                "memory_max", "pids_max"):
        assert key in ADMIN_KEYS


@st.composite
def spelled(draw: st.DrawFn) -> str:
    """An admin-only key as a raw client might spell it: any case, blanks around."""
    key = draw(st.sampled_from(ADMIN_KEYS))
    flips = draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    cased = "".join(c.upper() if flip else c for c, flip in zip(key, flips, strict=True))
    pad = st.sampled_from(["", " ", "\t", "  "])
    return draw(pad) + cased + draw(pad)


@given(spelled(), st.sampled_from(["0", "/bin/sh", "", "true", {"A": "1"}, None, 1]))
def test_no_spelling_of_an_admin_key_passes_the_operate_tier(key: str, value: object) -> None:
    with pytest.raises(CommandError) as refused:
        parse_options({key: value}, Tier.OPERATE)
    assert refused.value.errno == Errno.ACCESS_DENIED


@given(spelled())
def test_an_admin_key_among_operate_keys_refuses_the_whole_request(key: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_options({"graceful_timeout": "3", key: "0", "numprocesses": "2"}, Tier.OPERATE)
    assert refused.value.errno == Errno.ACCESS_DENIED


def test_operate_keys_pass_in_any_spelling() -> None:
    changes = parse_options({" Graceful_Timeout ": "3", "NUMPROCESSES": 4}, Tier.OPERATE)
    config = apply_options(WatcherConfig(name="w", cmd="/bin/true"), changes)
    assert (config.graceful_timeout, config.numprocesses) == (3.0, 4)


def test_what_is_applied_is_what_was_checked() -> None:
    changes = parse_options({"CMD": "/bin/true", "RLIMIT_NOFILE": "64"}, Tier.ADMIN)
    config = apply_options(WatcherConfig(name="w", cmd="/bin/true"), changes)
    assert config.cmd == "/bin/true"
    assert (RLIMITS["rlimit_nofile"], 64, 64) in config.rlimits


def test_a_new_uid_without_gid_takes_that_users_primary_group() -> None:
    nobody = pwd.getpwnam("nobody")
    config = WatcherConfig(name="w", cmd="/bin/true")
    changed = apply_options(config, parse_options({"uid": "nobody"}, Tier.ADMIN))
    assert (changed.uid, changed.gid) == (nobody.pw_uid, nobody.pw_gid)
    explicit = apply_options(config, parse_options({"uid": "nobody", "gid": "0"}, Tier.ADMIN))
    assert explicit.gid == 0


def test_the_environment_is_shown_to_the_admin_tier_only() -> None:
    config = dataclasses.replace(WatcherConfig(name="w", cmd="/bin/true"), env={"TOKEN": "s3cret"})
    assert option_values(config, Tier.ADMIN)["env"] == {"TOKEN": "s3cret"}
    assert "env" not in option_values(config, Tier.OPERATE)


def test_env_file_is_refused_by_set_and_add_even_for_the_admin() -> None:
    with pytest.raises(CommandError, match="env_file: set it in the configuration file"):
        parse_options({"env_file": "/etc/default/web"}, Tier.ADMIN)
