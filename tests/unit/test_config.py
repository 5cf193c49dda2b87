"""Loading Circus INI files: syntax, includes, substitution, options and cross-checks."""

from __future__ import annotations

import json
import os
import pwd
import resource
import signal
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from circus_sd.config import ConfigError, ConfigWarning, load_config
from circus_sd.config.ini import parse_ini
from circus_sd.config.model import Config, Location

ENV: Mapping[str, str] = {"PATH": os.defpath, "HOME": "/home/test"}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).removeprefix("\n"))
    return path


def load(path: Path, environ: Mapping[str, str] = ENV) -> tuple[Config, list[ConfigWarning]]:
    return load_config(str(path), environ)


def error_of(path: Path, environ: Mapping[str, str] = ENV) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ)
    return caught.value


def messages(warnings: list[ConfigWarning]) -> list[str]:
    return [str(w) for w in warnings]


def warning_of(path: Path, option: str, environ: Mapping[str, str] = ENV) -> ConfigWarning:
    """The one warning about `option` of a file that loads."""
    _config, warnings = load(path, environ)
    (found,) = [w for w in warnings if w.option == option]
    return found


# -- error and warning format --------------------------------------------------------------------


def test_error_str_names_every_known_part_and_omits_the_rest() -> None:
    full = ConfigError(
        "expected an integer >= 0, got 'x'",
        path="/etc/circus.ini", line=12, section="watcher:web", option="numprocesses",
    )
    assert str(full) == (
        "/etc/circus.ini:12: [watcher:web] numprocesses: expected an integer >= 0, got 'x'"
    )
    assert str(ConfigError("configuration file not found", path="/x.ini")) == (
        "/x.ini: configuration file not found"
    )
    assert str(ConfigError("boom", section="circus")) == "[circus] boom"
    warning = ConfigWarning(Location("/a.ini", 3), "circus", "statsd", "has no effect")
    assert str(warning) == "/a.ini:3: [circus] statsd: has no effect"
    assert str(ConfigWarning(None, None, None, "hello")) == "hello"


# -- rule 1: INI syntax as Circus reads it (tests/unit/test_config_circus_grammar.py compares
# with Circus 0.19 itself) ------------------------------------------------------------------------


def test_ini_reader_tracks_lines() -> None:
    sections = parse_ini("# top\n[a]\n\nk = v\n  more\nj = w\n")
    assert sections[0].line == 2
    assert [(e.key, e.value, e.line) for e in sections[0].entries] == [
        ("k", "v\nmore", 4), ("j", "w", 6),
    ]


def test_keys_are_case_insensitive_and_continuations_join(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        CMD: sleep
        Args = 10
          20
        NumProcesses = 3
    """)
    config, warnings = load(path)
    (web,) = config.watchers
    assert (web.cmd, web.args, web.numprocesses) == ("sleep", "10\n20", 3)
    assert warnings == []
    assert web.location == Location(str(path), 1)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        this line has no separator
    """)
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 3)
    assert str(error).startswith(f"{path}:3: expected 'key = value'")


def test_key_before_any_section_is_an_error(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "circus.ini", "cmd = sleep 1\n"))
    assert error.line == 1


def test_a_key_set_again_keeps_its_first_value_and_warns_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        NUMPROCESSES = 2
        numprocesses = 3
    """)
    config, _ = load(path)
    assert config.watchers[0].numprocesses == 2  # Circus's reader ignores a key set again
    warning = warning_of(path, "numprocesses")
    assert warning.location == Location(str(path), 4)
    assert f"the first value (at {path}:3) is used" in warning.message


def test_a_section_named_again_in_one_file_adds_to_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [circus]
        loglevel = info
        [watcher:web]
        cmd = sleep 1
        [circus]
        umask = 022
        loglevel = debug
        [watcher:web]
        numprocesses = 4
    """)
    config, warnings = load(path)
    assert (config.arbiter.loglevel, config.arbiter.umask) == ("info", 0o022)
    assert config.watchers[0].numprocesses == 4
    assert [(w.location, w.option) for w in warnings] == [
        (Location(str(path), 7), "loglevel"),
    ]


def test_unknown_section_warns(tmp_path: Path) -> None:
    _, warnings = load(write(tmp_path, "circus.ini", "[nodes]\nx = 1\n"))
    assert messages(warnings) == [f"{tmp_path}/circus.ini:1: [nodes] unknown section (ignored)"]


def test_socket_section_is_read_without_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [socket:web]
        host = 127.0.0.1
        port = 8888
    """)
    config, warnings = load(path)
    assert config.watchers == ()
    assert [(s.name, s.host, s.port) for s in config.sockets] == [("web", "127.0.0.1", 8888)]
    assert messages(warnings) == []


# -- rule 1: env sections ------------------------------------------------------------------------


def test_env_sections_and_globs_merge_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web-1]
        cmd = sleep 1
        [watcher:web-2]
        cmd = sleep 1
        [watcher:worker]
        cmd = sleep 1

        [env:web-*]
        Tier = web
        LEVEL = glob
        [env]
        LEVEL = all
        Mixed_Case = kept
        [env:worker, web-2]
        LEVEL = named
    """)
    config, warnings = load(path)
    envs = {w.name: dict(w.env) for w in config.watchers}
    assert envs == {
        "web-1": {"LEVEL": "glob", "Mixed_Case": "kept", "Tier": "web"},
        "web-2": {"LEVEL": "named", "Mixed_Case": "kept", "Tier": "web"},
        "worker": {"LEVEL": "named", "Mixed_Case": "kept"},
    }
    assert warnings == []


def test_env_section_matching_no_watcher_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[env:nothing*]\nA = 1\n")
    _, warnings = load(path)
    assert messages(warnings) == [f"{path}:1: [env:nothing*] matches no watcher"]


# -- rule 2: includes ----------------------------------------------------------------------------


def test_include_and_include_dir_are_relative_and_sorted(tmp_path: Path) -> None:
    main = write(tmp_path, "etc/circus.ini", """
        [circus]
        include = extra/*.conf   more.ini
        include_dir = conf.d
        [watcher:main]
        cmd = sleep 1
    """)
    write(tmp_path, "etc/extra/b.conf", "[watcher:b]\ncmd = sleep 1\n")
    write(tmp_path, "etc/extra/a.conf", "[watcher:a]\ncmd = sleep 1\n[env]\nFROM = a\n")
    write(tmp_path, "etc/more.ini", "[watcher:more]\ncmd = sleep 1\n")
    write(tmp_path, "etc/conf.d/2.ini", "[watcher:two]\ncmd = sleep 1\n")
    write(tmp_path, "etc/conf.d/1.ini", "[watcher:one]\ncmd = sleep 1\n")
    write(tmp_path, "etc/conf.d/ignored.txt", "not ini")
    config, warnings = load(main)
    assert [w.name for w in config.watchers] == ["main", "a", "b", "more", "one", "two"]
    assert config.watcher("main") is not None
    assert dict(config.watchers[0].env) == {"FROM": "a"}
    assert config.watchers[1].location == Location(str(tmp_path / "etc/extra/a.conf"), 1)
    assert config.path == str(main)
    assert warnings == []


def test_a_hook_beside_the_included_file_that_names_it_is_found(tmp_path: Path) -> None:
    """As in Circus: the directory of the file holding `hooks.X` is searched."""
    main = write(tmp_path, "etc/circus.ini", """
        [circus]
        include_dir = conf.d
    """)
    write(tmp_path, "etc/conf.d/web.ini", """
        [watcher:web]
        cmd = sleep 1
        hooks.before_start = web_hooks_beside_include.check
    """)
    hooks = "def check(**kwargs):\n    return True\n"
    write(tmp_path, "etc/conf.d/web_hooks_beside_include.py", hooks)
    config, _warnings = load(main)
    assert config.watchers[0].hooks["before_start"].target == "web_hooks_beside_include.check"


def test_include_matching_nothing_warns(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude = missing/*.ini\n")
    _, warnings = load(main)
    assert messages(warnings) == [
        f"{main}:2: [circus] include: '{tmp_path}/missing/*.ini' matches no file"
    ]


def test_a_watcher_in_two_files_merges_the_main_file_first(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", """
        [circus]
        include = web.ini more.ini
        [watcher:web]
        cmd = sleep 1
    """)
    write(tmp_path, "web.ini", "# comment\n[watcher:web]\ncmd = sleep 2\nnumprocesses = 3\n")
    other = write(tmp_path, "more.ini", "[watcher:web]\nnumprocesses = 5\npriority = 2\n")
    config, warnings = load(main)
    (web,) = config.watchers
    assert (web.cmd, web.numprocesses, web.priority) == ("sleep 1", 3, 2)
    assert [(w.location, w.option) for w in warnings] == [
        (Location(str(tmp_path / "web.ini"), 3), "cmd"),
        (Location(str(other), 2), "numprocesses"),
    ]


def test_same_key_in_two_files_keeps_the_first(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude = more.ini\n[env]\nA = 1\n")
    other = write(tmp_path, "more.ini", "[env]\nB = 2\nA = 3\n")
    write(tmp_path, "more.ini", "[env]\nB = 2\nA = 3\n[watcher:w]\ncmd = sleep 1\n")
    config, _ = load(main)
    assert dict(config.watchers[0].env) == {"A": "1", "B": "2"}
    warning = warning_of(main, "A")
    assert (warning.location, warning.section) == (Location(str(other), 3), "env")
    assert f"(at {main}:4)" in warning.message


def test_an_empty_watcher_or_plugin_section_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:empty]
        [plugin:nothing]
        ; a comment only
        [watcher:web]
        cmd = sleep 1
    """)
    config, warnings = load(path)
    assert [w.name for w in config.watchers] == ["web"]
    assert messages(warnings) == [
        f"{path}:1: [watcher:empty] has no options: skipped, as Circus does",
        f"{path}:2: [plugin:nothing] has no options: skipped, as Circus does",
    ]


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path, "a.ini", "[circus]\ninclude = b.ini\n")
    write(tmp_path, "b.ini", "[circus]\ninclude = sub/c.ini\n")
    write(tmp_path, "sub/c.ini", "[circus]\n\ninclude = ../a.ini\n")
    error = error_of(main)
    assert (error.path, error.line, error.option) == (str(tmp_path / "sub/c.ini"), 3, "include")
    assert error.message.startswith("include loop: ")
    assert error.message.endswith(f"{tmp_path}/sub/../a.ini")


def test_a_wildcard_matching_its_own_file_is_not_a_loop(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude = *.ini\n")
    write(tmp_path, "web.ini", "[watcher:web]\ncmd = sleep 1\n")
    config, warnings = load(main)
    assert [w.name for w in config.watchers] == ["web"]
    assert warnings == []


def test_a_file_included_twice_is_read_once(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude = web.ini ./web.ini\n")
    write(tmp_path, "web.ini", "[watcher:web]\ncmd = sleep 1\n")
    config, warnings = load(main)
    assert [w.name for w in config.watchers] == ["web"]
    assert len(warnings) == 1 and "already included" in warnings[0].message


def test_missing_main_file_names_the_path(tmp_path: Path) -> None:
    error = error_of(tmp_path / "nope.ini")
    assert (error.path, error.line) == (str(tmp_path / "nope.ini"), None)
    assert str(error) == f"{tmp_path}/nope.ini: configuration file not found"


# -- rule 3: substitution ------------------------------------------------------------------------


def test_env_placeholders_substituted_except_in_spawn_time_values(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    path = write(tmp_path, "circus.ini", """
        [circus]
        endpoint = ipc://$(circus.env.RUN)/ctl
        [env:web]
        DATA = $(circus.env.ROOT)/data
        [socket:web]
        [watcher:web]
        cmd = sleep $(circus.env.SECONDS) $(circus.wid)
        args = $(circus.sockets.web)
        use_sockets = true
        shell_args = $(circus.env.X)
        working_dir = $(circus.env.root)
        graceful_timeout = ((circus.env.Timeout))
        stdout_stream.filename = $(circus.env.ROOT)/$(circus.wid).log
        home = ~/x
    """)
    environ = {**ENV, "RUN": "/run", "ROOT": str(tmp_path / "srv"), "TIMEOUT": "4"}
    config, _ = load(path, environ)
    (web,) = config.watchers
    assert config.arbiter.endpoint == "ipc:///run/ctl"
    assert web.cmd == "sleep $(circus.env.SECONDS) $(circus.wid)"
    assert web.args == "$(circus.sockets.web)"
    assert web.shell_args == "$(circus.env.X)"
    assert dict(web.env) == {"DATA": "$(circus.env.ROOT)/data"}
    assert web.working_dir == str(tmp_path / "srv")  # upper-case fallback
    assert web.graceful_timeout == 4.0  # case-insensitive, ((…)) spelling
    assert web.stdout_stream is not None
    assert web.stdout_stream.filename == f"{tmp_path}/srv/$(circus.wid).log"
    assert web.extra["home"] == "~/x"


def test_env_sections_feed_substitution(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    path = write(tmp_path, "circus.ini", f"""
        [env:web]
        APP = {tmp_path}/app
        [watcher:web]
        cmd = sleep 1
        working_dir = $(circus.env.APP)
    """)
    config, _ = load(path)
    assert config.watchers[0].working_dir == f"{tmp_path}/app"


def test_unknown_variable_is_kept_as_written_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        working_dir = $(circus.env.NOPE)/x
    """)
    config, warnings = load(path)
    assert config.watchers[0].working_dir == "$(circus.env.NOPE)/x"  # as Circus keeps it
    (warning,) = [w for w in warnings if w.option == "working_dir"]
    assert warning.location == Location(str(path), 3)
    assert "$(circus.env.NOPE) names no variable" in warning.message


def test_an_unset_variable_in_a_number_is_an_error_on_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        numprocesses = $(circus.env.NOPE)
    """)
    error = error_of(path)
    assert (error.line, error.option) == (3, "numprocesses")
    assert "'$(circus.env.NOPE)'" in error.message


# -- rule 4: watcher options ---------------------------------------------------------------------


def test_watcher_options_are_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        numprocesses = 4
        warmup_delay = 0.5
        autostart = no
        stop_signal = QUIT
        umask = 027
        copy_env = True
        max_retry = -1
    """)
    (web,) = load(path)[0].watchers
    assert (web.numprocesses, web.warmup_delay, web.autostart) == (4, 0.5, False)
    assert (web.stop_signal, web.umask, web.copy_env) == (signal.SIGQUIT, 0o27, True)
    assert web.max_retry == -1
    assert (web.singleton, web.respawn, web.graceful_timeout) == (False, True, 30.0)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("numprocesses", "x", "expected an integer, got 'x'"),
        ("numprocesses", "-1", "expected an integer >= 0, got '-1'"),
        ("respawn", "maybe", "expected a boolean (true/false), got 'maybe'"),
        ("stop_signal", "SIGNOPE", "expected a signal name or number"),
        ("uid", "-1", "no user '-1' exists"),
        ("graceful_timeout", "soon", "expected a number of seconds"),
    ],
)
def test_bad_values_name_file_line_section_and_option(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, "circus.ini", f"""
        [watcher:web]
        cmd = sleep 1
        {key} = {value}
    """)
    error = error_of(path)
    assert (error.path, error.line, error.section, error.option) == (
        str(path), 3, "watcher:web", key,
    )
    assert expected in error.message
    assert str(error).startswith(f"{path}:3: [watcher:web] {key}: ")


def test_rlimit_forms(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        rlimit_nofile = 10
        rlimit_core = 10:20
        rlimit_as =
    """)
    (web,) = load(path)[0].watchers
    infinity = resource.RLIM_INFINITY
    assert web.rlimits == (
        (resource.RLIMIT_NOFILE, 10, 10),
        (resource.RLIMIT_CORE, 10, 20),
        (resource.RLIMIT_AS, infinity, infinity),
    )


def test_unknown_rlimit_lists_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[watcher:web]\ncmd = sleep 1\nrlimit_files = 10\n")
    error = error_of(path)
    assert (error.line, error.option) == (3, "rlimit_files")
    assert "rlimit_nofile" in error.message


def test_bad_rlimit_value(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[watcher:web]\ncmd = sleep 1\nrlimit_nofile = 20:10\n")
    assert "soft limit above hard limit" in error_of(path).message


def test_unknown_and_unsupported_keys_warn_with_file_line_and_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        on_demand = true
        virtualenv_py_ver = 3.11
        my_plugin_key = 7
    """)
    config, warnings = load(path)
    assert messages(warnings) == [
        f"{path}:3: [watcher:web] on_demand: not supported yet in this version; it has no effect",
        f"{path}:4: [watcher:web] virtualenv_py_ver: not supported yet in this version; "
        "it has no effect",
        f"{path}:5: [watcher:web] my_plugin_key: unknown option (ignored; kept for plugins)",
    ]
    assert dict(config.watchers[0].extra) == {
        "on_demand": "true",
        "virtualenv_py_ver": "3.11",
        "my_plugin_key": "7",
    }


@pytest.mark.parametrize("body", ["numprocesses = 1\n", "cmd =\n"])
def test_missing_or_empty_cmd_is_an_error(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, "circus.ini", "# comment\n[watcher:web]\n" + body)
    error = error_of(path)
    assert (error.line, error.section, error.option) == (2, "watcher:web", "cmd")


@pytest.mark.parametrize("name", ["", "web app", "wéb", "a/b"])
def test_invalid_watcher_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "circus.ini", f"[watcher:{name}]\ncmd = sleep 1\n")
    assert "invalid watcher name" in error_of(path).message


def test_watcher_names_clashing_by_case_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        [watcher:Web]
        cmd = sleep 1
    """)
    error = error_of(path)
    assert (error.line, error.section) == (3, "watcher:Web")
    assert f"at {path}:1" in error.message


def test_a_ready_log_line_that_is_not_a_regex_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[watcher:web]\ncmd = sleep 1\nready_log_line = ready (\n")
    error = error_of(path)
    assert (error.line, error.section, error.option) == (3, "watcher:web", "ready_log_line")
    assert "not a valid regular expression" in error.message
    # Output is matched as bytes: a pattern only a text pattern can be is refused too.
    path.write_text("[watcher:web]\ncmd = sleep 1\nready_log_line = (?u)ready\n")
    assert "not a valid regular expression" in error_of(path).message


def test_a_ready_log_line_on_direct_journal_streams_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        ready_log_line = ready
        stdout_stream.class = JournalStream
        stdout_stream.direct = true
        stderr_stream.class = JournalStream
        stderr_stream.direct = true
    """)
    error = error_of(path)
    assert (error.line, error.option) == (3, "ready_log_line")
    one_direct = path.read_text().replace("stderr_stream.direct = true\n", "")
    path.write_text(one_direct)
    (config, _warnings) = load(path)
    assert config.watchers[0].ready_log_line == "ready"
    assert config.watchers[0].awaits_readiness


# -- rule 5: [circus] ----------------------------------------------------------------------------


def test_circus_section(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [circus]
        endpoint = tcp://127.0.0.1:5555
        pubsub_endpoint = tcp://127.0.0.1:5556
        umask = 002
        loglevel = WARN
        warmup_delay = 2
    """)
    config, warnings = load(path)
    arbiter = config.arbiter
    assert arbiter.endpoint == "tcp://127.0.0.1:5555"
    assert arbiter.pubsub_endpoint == "tcp://127.0.0.1:5556"
    assert (arbiter.umask, arbiter.loglevel, arbiter.warmup_delay) == (0o2, "warning", 2.0)
    assert warnings == []


def test_circus_keys_without_effect_warn_with_advice(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [circus]
        check_delay = 5
        statsd = true
        httpd_port = 8080
        multicast_endpoint = udp://237.219.251.97:12027
        stream_backend = thread
        fqdn_prefix = x
        frobnicate = 1
    """)
    _, warnings = load(path)
    assert messages(warnings) == [
        f"{path}:2: [circus] check_delay: has no effect; "
        "supervision is event-driven; there is no polling tick",
        f"{path}:3: [circus] statsd: has no effect; "
        "use `circusctl stats` or the Prometheus exporter plugin",
        f"{path}:4: [circus] httpd_port: has no effect; circus-web is not supported; use circusctl",
        f"{path}:5: [circus] multicast_endpoint: has no effect; "
        "discovery is off by design; give circusctl the endpoint",
        f"{path}:6: [circus] stream_backend: has no effect; output is read by the event loop",
        f"{path}:7: [circus] fqdn_prefix: has no effect; only used by Circus's stats",
        f"{path}:8: [circus] frobnicate: unknown option (ignored)",
    ]


def test_debug_means_loglevel_debug(tmp_path: Path) -> None:
    config, warnings = load(write(tmp_path, "circus.ini", "[circus]\ndebug = 1\n"))
    assert (config.arbiter.debug, config.arbiter.loglevel) == (True, "debug")
    assert warnings == []
    config, warnings = load(write(tmp_path, "c2.ini", "[circus]\nloglevel = error\ndebug = 1\n"))
    assert config.arbiter.loglevel == "debug"
    assert [w.option for w in warnings] == ["debug"]


def test_bad_circus_value(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "circus.ini", "[circus]\n\numask = 999\n"))
    assert (error.line, error.section, error.option) == (3, "circus", "umask")


# -- rule 6: plugins -----------------------------------------------------------------------------


def test_flapping_plugin_gives_watcher_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [plugin:flap]
        use = circus.plugins.flapping.Flapping
        attempts = 5
        window = 3
        retry_in = 10
        max_retry = -1
        [watcher:web]
        cmd = sleep 1
        flapping.attempts = 9
        [watcher:worker]
        cmd = sleep 1
    """)
    config, warnings = load(path)
    web, worker = config.watchers
    assert (web.flapping_attempts, web.flapping_window) == (9, 3.0)
    assert (worker.flapping_attempts, worker.flapping_window) == (5, 3.0)
    assert (worker.flapping_retry_in, worker.flapping_max_retry) == (10.0, -1)
    assert warnings == []


def test_inactive_flapping_plugin_has_no_effect(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [plugin:flap]
        use = circus.plugins.flapping.Flapping
        active = false
        attempts = 5
        [watcher:web]
        cmd = sleep 1
    """)
    config, warnings = load(path)
    assert config.watchers[0].flapping_attempts == 2
    assert warnings == []


def test_bad_flapping_plugin_value_names_the_plugin_section(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [plugin:flap]
        use = circus.plugins.flapping.Flapping
        window = soon
    """)
    error = error_of(path)
    assert (error.line, error.section, error.option) == (3, "plugin:flap", "window")


def test_a_plugin_section_becomes_a_singleton_watcher_running_the_plugin(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [circus]
        endpoint = ipc:///tmp/x/control.sock
        pubsub_endpoint = ipc:///tmp/x/events.sock
        [plugin:stats]
        use = circus.plugins.statsd.StatsdEmitter
        host = 127.0.0.1
        port = $(circus.env.STATSD_PORT)
        [plugin:off]
        use = autoscale
        active = false
    """)
    config, warnings = load(path, {**ENV, "STATSD_PORT": "9125"})
    assert warnings == []
    (watcher,) = config.watchers
    assert watcher.name == "plugin:stats"
    assert (watcher.singleton, watcher.priority, watcher.copy_env) == (True, 1, True)
    assert watcher.cmd.endswith("-m circus_sd.plugins stats")
    assert "--use circus_sd.plugins.statsd.StatsdEmitter" in watcher.args
    assert "--endpoint ipc:///tmp/x/control.sock" in watcher.args
    assert "--pubsub-endpoint ipc:///tmp/x/events.sock" in watcher.args
    assert json.loads(watcher.env["CIRCUS_SD_PLUGIN_OPTIONS"]) == {
        "host": "127.0.0.1", "port": "9125",
    }


def test_shipped_plugin_options_are_checked_at_load_time(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [plugin:scale]
        use = autoscale
        watcher = web
        max = many
    """)
    error = error_of(path)
    assert (error.line, error.section, error.option) == (4, "plugin:scale", "max")
    path = write(tmp_path, "circus.ini", """
        [plugin:scale]
        use = autoscale
        watcher = web
        grow_above = 10
        shrink_below = 20
        colour = blue
    """)
    error = error_of(path)
    assert (error.line, error.section) == (1, "plugin:scale")
    assert "shrink_below" in error.message
    path = write(tmp_path, "circus.ini", """
        [plugin:scale]
        use = autoscale
        watcher = web
        priority = 5
        colour = blue
    """)
    config, warnings = load(path)
    assert config.watchers[0].priority == 5
    assert messages(warnings) == [f"{path}:5: [plugin:scale] colour: unknown option (ignored)"]


def test_plugin_use_errors_and_circus_plugins_without_counterpart(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[plugin:x]\nwatcher = web\n")
    error = error_of(path)
    assert (error.line, error.section, error.option) == (1, "plugin:x", "use")
    path = write(tmp_path, "circus.ini", "[plugin:x]\nuse = not a class\n")
    assert error_of(path).option == "use"
    path = write(tmp_path, "circus.ini", """
        [plugin:http]
        use = circus.plugins.http_observer.HttpObserver
        [plugin:mine]
        use = mypackage.plugins.Mine
        anything = goes
    """)
    config, warnings = load(path)
    assert messages(warnings) == [
        f"{path}:2: [plugin:http] use: Circus's circus.plugins.http_observer.HttpObserver has no "
        "circus-sd counterpart; this section has no effect"
    ]
    assert [w.name for w in config.watchers] == ["plugin:mine"]


# -- rule 7: cross-checks ------------------------------------------------------------------------


def executable(directory: Path, name: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_missing_executable_on_path_is_a_warning_at_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "# comment\n[watcher:web]\ncmd = no-such-program --flag\n")
    warning = warning_of(path, "cmd")
    assert (warning.location, warning.section) == (Location(str(path), 2), "watcher:web")
    assert "'no-such-program' not found" in warning.message
    assert warning.message.endswith("its processes fail to start until this is fixed")


@pytest.mark.parametrize(
    ("target", "problem"),
    [("/nonexistent/bin/app", "does not exist"), ("./script", "is not executable")],
)
def test_program_paths_are_checked(tmp_path: Path, target: str, problem: str) -> None:
    executable(tmp_path, "script", mode=0o644)
    path = write(tmp_path, "circus.ini", f"""
        [watcher:web]
        cmd = {target}
        working_dir = {tmp_path}
    """)
    assert problem in warning_of(path, "cmd").message


def test_program_resolution_rules(tmp_path: Path) -> None:
    executable(tmp_path, "bin/app")
    executable(tmp_path, "venv/bin/vapp")
    executable(tmp_path, "other/oapp")
    path = write(tmp_path, "circus.ini", f"""
        [watcher:relative]
        cmd = bin/app --x
        working_dir = {tmp_path}
        [watcher:env-path]
        cmd = app
        [env:env-path]
        PATH = /nowhere:{tmp_path}/bin
        [watcher:copied-path]
        cmd = oapp
        copy_path = true
        [watcher:venv]
        cmd = vapp
        virtualenv = {tmp_path}/venv
        [watcher:exe]
        cmd = anything-as-argv0
        executable = {tmp_path}/bin/app
        [watcher:shell]
        cmd = whatever | not checked
        shell = true
        [watcher:placeholder]
        cmd = $(circus.env.APP_BIN) --serve
        [env:placeholder]
        APP_BIN = /only/known/per/process
        [watcher:quoted]
        cmd = "{tmp_path}/bin/app" 'a b'
    """)
    config, _ = load(path, {"PATH": f"{tmp_path}/other"})
    assert len(config.watchers) == 8


def test_executable_option_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        executable = /nonexistent/python
    """)
    assert "'/nonexistent/python' does not exist" in warning_of(path, "executable").message


def test_unbalanced_quotes_in_cmd(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", "[watcher:web]\ncmd = sleep 'oops\n")
    assert error_of(path).option == "cmd"


def test_missing_working_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", f"""
        [watcher:web]
        cmd = sleep 1
        working_dir = {tmp_path}/gone
    """)
    warning = warning_of(path, "working_dir")
    assert warning.location == Location(str(path), 1)
    assert "is not an existing directory" in warning.message


def test_a_user_or_group_not_there_yet_is_looked_up_at_each_spawn(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:web]
        cmd = sleep 1
        uid = no-such-user-here
        gid = no-such-group-here
    """)
    config, _ = load(path)
    web = config.watchers[0]
    assert (web.uid, web.gid) == (None, None)
    assert (web.user_name, web.group_name) == ("no-such-user-here", "no-such-group-here")
    warning = warning_of(path, "uid")
    assert warning.location == Location(str(path), 3)
    assert "no user 'no-such-user-here' exists (yet)" in warning.message


def test_uid_gives_the_primary_group(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid())
    unknown_uid = next(uid for uid in range(54321, 64000) if not _has_passwd(uid))
    path = write(tmp_path, "circus.ini", f"""
        [watcher:named]
        cmd = sleep 1
        uid = {me.pw_name}
        [watcher:numeric]
        cmd = sleep 1
        uid = {unknown_uid}
        [watcher:both]
        cmd = sleep 1
        uid = {me.pw_uid}
        gid = 4242
    """)
    named, numeric, both = load(path)[0].watchers
    assert (named.uid, named.gid) == (me.pw_uid, me.pw_gid)
    assert (numeric.uid, numeric.gid) == (unknown_uid, None)
    assert (both.uid, both.gid) == (me.pw_uid, 4242)


def _has_passwd(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_uid_warns_when_the_arbiter_is_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "circus.ini", "[watcher:web]\ncmd = sleep 1\nuid = 0\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    _, warnings = load(path)
    assert [(w.section, w.option) for w in warnings] == [("watcher:web", "uid")]
    assert "root" in warnings[0].message
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert load(path)[1] == []


# -- rule 8: order -------------------------------------------------------------------------------


def test_watchers_come_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "circus.ini", """
        [watcher:zeta]
        cmd = sleep 1
        priority = 1
        [watcher:alpha]
        cmd = sleep 1
        priority = 9
        [watcher:mid]
        cmd = sleep 1
    """)
    assert [w.name for w in load(path)[0].watchers] == ["zeta", "alpha", "mid"]


def test_a_file_including_itself_by_name_is_a_loop(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude_dir = .\ninclude = circus.ini\n")
    write(tmp_path, "other.ini", "[env]\nA = 1\n")
    error = error_of(main)
    assert (error.line, error.option) == (3, "include")
    assert error.message == f"include loop: {main} -> {tmp_path}/circus.ini"


def test_missing_include_dir_warns(tmp_path: Path) -> None:
    main = write(tmp_path, "circus.ini", "[circus]\ninclude_dir = conf.d\n")
    _, warnings = load(main)
    assert [(w.option, w.message) for w in warnings] == [
        ("include_dir", f"'{tmp_path}/conf.d/*.ini' matches no file")
    ]
