"""Property-based: whatever a configuration file holds, the loader returns a Config or raises a
ConfigError that names the file (and the line, when the mistake is in one) -- never another
exception, never a hang.

Two streams of files, derandomized so that CI runs the same cases every time: INI-ish text
(section headers, `key = value` lines with known and unknown keys, comments, continuations,
junk lines, invalid UTF-8), and a valid skeleton with known keys given arbitrary values (tricky
numbers such as `inf`, `1e400`, `²`, `١٢`, placeholders, paths, quotes, NUL...). Each case is
loaded from a directory of its own, under a per-case alarm.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circus_sd.config import ConfigError, load_config
from circus_sd.config.model import HOOK_NAMES, ArbiterConfig, SocketConfig, WatcherConfig
from circus_sd.config.options import RLIMITS, OptionValueError, options_of, rlimit_pair
from circus_sd.config.streams import STREAM_OPTIONS

EXAMPLES = 1000  # per stream
CASE_DEADLINE = 5.0  # seconds: a case taking longer is a hang
ENV: Mapping[str, str] = {"PATH": os.defpath, "HOME": "/home/test"}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

WATCHER_KEYS = [
    *options_of(WatcherConfig), *RLIMITS, *(f"hooks.{name}" for name in HOOK_NAMES),
    *(f"{prefix}.{key}" for prefix in ("stdout_stream", "stderr_stream") for key in STREAM_OPTIONS),
    "check_delay", "on_demand", "hooks.nope", "stdout_stream.nope", "rlimit_nope",
]
SECTION_KEYS: list[tuple[str, str]] = [
    *(("circus", key) for key in [*options_of(ArbiterConfig), "include", "include_dir",
                                  "statsd", "httpd", "check_delay"]),
    *(("watcher:w", key) for key in WATCHER_KEYS),
    *(("socket:s", key) for key in options_of(SocketConfig)),
    *(("plugin:p", key) for key in ("use", "active", "priority", "attempts", "window",
                                    "retry_in", "max_retry", "max_mem", "port")),
    *(("env", key) for key in ("PATH", "HOME", "X", "path")),
    *(("env:w*", key) for key in ("PATH", "Y")),
]
SECTIONS = [
    "circus", "watcher:w", "watcher:W", "watcher:web", "watcher:", "watcher:bad name", "env",
    "env:w*", "env:web,w", "env:", "socket:s", "socket:", "plugin:p", "plugin:flap", "DEFAULT",
    "other",
]
TRICKY = [
    "", "0", "-1", "1", "2", "7", "8", "077", "0o7", "-0", "inf", "-inf", "nan", "1e400", "1e-400",
    "1_000", "0x10", "²", "١٢", "9" * 5000, "1" * 4301, "true", "false", "yes", "maybe", "max",
    "MAX", "50%", "inf%", "0%", "1 2", "max 5", "512M", "2G", "1T", "-5K", "SIGTERM", "SIGRTMIN",
    "TERM", "65", "root", "nobody", "nogroup", "0", "65534", "4294967296", "infinity", "1:2",
    "2:1", ":", "$(circus.env.HOME)", "$(circus.env.NOPE)", "$(circus.wid)", "((circus.env.home))",
    "$(circus.sockets.s)", "$(circus.sockets.nope)", "$(circus.", "/bin/true", "/bin/sh -c 'x'",
    "/", ".", "..", "*", "../*", "*.ini", "w", "w, web", "web w", "FileStream",
    "circus.stream.FileStream", "JournalStream", "a.b", "os.path.join", "os.path.join, true",
    "circus.plugins.flapping.Flapping", "circus.plugins.statsd.StatsdEmitter", "'", '"', "\\",
    ";", "#", "[x]", "=", "\x00", "\t", "\u2028", "\udcff", "ipc://x", "tcp://0.0.0.0:1",
    "tcp://127.0.0.1:0", "AF_UNIX", "AF_INET6", "SOCK_DGRAM", "udp", "mptcp", "W7", "W6",
    "midnight", "red", "<3>", "err",
]
values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30))
keys = st.one_of(st.sampled_from([key for _section, key in SECTION_KEYS]), st.text(max_size=12))

lines = st.one_of(
    st.builds(
        lambda name, tail: f"[{name}]{tail}",
        st.one_of(st.sampled_from(SECTIONS), st.text(max_size=12)),
        st.sampled_from(["", "", " ", " # comment", " x", "]"]),
    ),
    st.builds(
        lambda indent, key, sep, value: f"{indent}{key}{sep}{value}",
        st.sampled_from(["", "", "", " ", "\t"]),
        keys,
        st.sampled_from([" = ", "=", ": ", " : ", " =", "= "]),
        values,
    ),
    st.builds(lambda mark, text: f"{mark}{text}", st.sampled_from(["#", ";", " #"]),
              st.text(max_size=20)),
    st.just(""),
    st.builds(lambda text: f"    {text}", st.text(max_size=20)),
    st.text(max_size=40),
)
ini_texts = st.builds(
    lambda items, newline: newline.join(items),
    st.lists(lines, max_size=30),
    st.sampled_from(["\n", "\n", "\r\n"]),
)


@st.composite
def known_keys_with_any_value(draw: st.DrawFn) -> str:
    """A skeleton that loads (one watcher running /bin/true), then up to 6 known keys set to
    arbitrary values; a multi-line value continues on indented lines."""
    sections: dict[str, dict[str, str]] = {"circus": {}, "watcher:w": {"cmd": "/bin/true"}}
    for (section, key), value in draw(
        st.lists(st.tuples(st.sampled_from(SECTION_KEYS), values), min_size=1, max_size=6)
    ):
        sections.setdefault(section, {})[key] = value.replace("\n", "\n  ")
    if "plugin:p" in sections:
        sections["plugin:p"].setdefault("use", "circus.plugins.flapping.Flapping")
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
        for name, options in sections.items()
    )


class Hang(Exception):
    """A case ran longer than CASE_DEADLINE."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"a case ran longer than {CASE_DEADLINE:g} s")


@pytest.fixture
def cases() -> Iterator[Path]:
    """A directory for the cases, each in a subdirectory of its own; an alarm per case."""
    base = Path(tempfile.mkdtemp(prefix="circus-sd-fuzz-"))
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield base
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(base, ignore_errors=True)


class Outcomes:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.counts: collections.Counter[str] = collections.Counter()
        self.slowest = 0.0

    def load(self, text: str) -> None:
        """Load `text` (written as UTF-8, lone surrogates as invalid bytes) and check the
        outcome; any other exception propagates, and fails the test with this case."""
        directory = Path(tempfile.mkdtemp(dir=self.base))
        path = directory / "circus.ini"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, CASE_DEADLINE)
        try:
            load_config(str(path), ENV)
        except ConfigError as error:
            assert error.path is not None, f"an error without a location: {error}"
            assert str(error).startswith(error.path), str(error)
            self.counts["ConfigError with file:line" if error.line else "ConfigError"] += 1
        else:
            self.counts["Config"] += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.slowest = max(self.slowest, time.monotonic() - started)
            shutil.rmtree(directory, ignore_errors=True)


def test_arbitrary_ini_text_loads_or_is_refused_with_a_location(
    cases: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = Outcomes(cases)

    @FUZZ_SETTINGS
    @given(ini_texts)
    def case(text: str) -> None:
        outcomes.load(text)

    case()
    with capsys.disabled():
        _report("INI-ish text", outcomes)


def test_known_keys_with_arbitrary_values_load_or_are_refused_with_a_location(
    cases: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = Outcomes(cases)

    @FUZZ_SETTINGS
    @given(known_keys_with_any_value())
    def case(text: str) -> None:
        outcomes.load(text)

    case()
    with capsys.disabled():
        _report("known keys, arbitrary values", outcomes)
    # The stream must reach both outcomes, or it tests little.
    assert outcomes.counts["Config"] and outcomes.counts["ConfigError with file:line"]


def test_every_option_parser_refuses_tricky_values_only_with_an_option_error() -> None:
    """Each declared parser, every tricky value in a few shapes (NUL and lone surrogates too,
    which `set` can send in JSON): a value or an OptionValueError, which the loader turns into a
    ConfigError with file:line and `set` into an error reply."""
    parsers = [declared.parse for cls in (ArbiterConfig, WatcherConfig, SocketConfig)
               for _field, declared in options_of(cls).values()]
    parsers += [declared.parse for _field, declared in STREAM_OPTIONS.values()]
    parsers.append(rlimit_pair)
    shapes = ["{}", " {} ", "{}%", "{}K", "max {}", "1 {}", "{}:1"]
    values = [shape.format(value) for shape in shapes for value in TRICKY]
    for parse in parsers:
        for value in values:
            with contextlib.suppress(OptionValueError):
                parse(value)


def _report(what: str, outcomes: Outcomes) -> None:
    total = sum(outcomes.counts.values())
    assert total >= EXAMPLES, f"only {total} cases ran"
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.counts.items()))
    print(f"\nconfig fuzz, {what}: {total} cases ({counts}); slowest {outcomes.slowest:.3f} s")
