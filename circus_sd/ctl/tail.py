"""`circusctl tail NAME...`: each watcher's recent output from where it is kept, then live.

Live lines come from the arbiter's output socket (one subscription per watcher). The
subscriptions are made before the history is read, so that nothing written in between is
missed; what they caught that the history already shows is printed once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from circus_sd.client import CallError, OutputBlock, follow_output
from circus_sd.ctl.commandline import Invocation, UsageError
from circus_sd.ctl.output_history import (
    HistoryLine,
    StreamTarget,
    Where,
    file_tail,
    journal_tail,
    stream_target,
)
from circus_sd.ctl.plain import error_line, is_error
from circus_sd.ctl.since import SinceError, parse_since

if TYPE_CHECKING:
    from circus_sd.ctl.app import Session

DEFAULT_LINES = 10
EXIT_OK, EXIT_CALL_ERROR, EXIT_USAGE, EXIT_ERROR_REPLY = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class TailRequest:
    """A tail command line, checked."""

    patterns: tuple[str, ...]
    lines: int | None  # None: every line since `since`
    since: float | None
    stream: str | None
    raw: bool
    follow: bool


def tail_request(invocation: Invocation, now: float) -> TailRequest:
    """The command line's tail request; UsageError on bad values."""
    if not invocation.args:
        raise UsageError("tail: give one or more watcher names (globs allowed)")
    flags = invocation.flags
    raw_lines = flags.get("lines")
    lines: int | None = DEFAULT_LINES
    if isinstance(raw_lines, str):
        if not raw_lines.isdecimal():
            raise UsageError(f"tail: -n/--lines must be a number of lines, got {raw_lines!r}")
        lines = int(raw_lines)
    since = None
    raw_since = flags.get("since")
    if isinstance(raw_since, str):
        try:
            since = parse_since(raw_since, now)
        except SinceError as exc:
            raise UsageError(f"tail: {exc}") from None
        if raw_lines is None:
            lines = None  # as journalctl: --since alone shows everything since
    stream = flags.get("stream")
    return TailRequest(
        patterns=tuple(invocation.args),
        lines=lines,
        since=since,
        stream=stream if isinstance(stream, str) else None,
        raw=bool(flags.get("raw")),
        follow=not flags.get("no_follow"),
    )


def match_watchers(patterns: tuple[str, ...], known: list[str]) -> tuple[list[str], list[str]]:
    """(the watchers the patterns name, in order and once each; the patterns matching none).
    Names match case-insensitively, as the arbiter matches them."""
    chosen: list[str] = []
    unmatched: list[str] = []
    for pattern in patterns:
        found = [name for name in known if fnmatch.fnmatchcase(name.lower(), pattern.lower())]
        if not found:
            unmatched.append(pattern)
        chosen += [name for name in found if name not in chosen]
    return chosen, unmatched


def prefixed(data: bytes, prefix: bytes) -> bytes:
    """Each line of `data` (whole lines) after `prefix`."""
    return prefix + data[:-1].replace(b"\n", b"\n" + prefix) + data[-1:]


def _prefix(name: str, wid: int | None) -> bytes:
    # A file does not say which process wrote a line: `name[-]`.
    return f"{name}[{'-' if wid is None else wid}] ".encode()


class _Followers:
    """One output subscription per watcher, each in a thread, all feeding one queue."""

    def __init__(self, endpoint: str, names: list[str], stream: str | None) -> None:
        self.blocks: queue.Queue[OutputBlock | CallError] = queue.Queue()
        # Set when the command ends (Ctrl-C in the shell): each thread leaves at its next block.
        self.stopped = threading.Event()
        for name in names:
            threading.Thread(target=self._pump, args=(follow_output(endpoint, name, stream),),
                             daemon=True).start()

    def _pump(self, blocks: Iterator[OutputBlock]) -> None:
        try:
            for block in blocks:
                if self.stopped.is_set():
                    break
                self.blocks.put(block)
        except CallError as exc:
            self.blocks.put(exc)
        finally:
            blocks.close()  # type: ignore[attr-defined]


class TailCommand:
    """The command's run on a session: resolve names, print history, follow."""

    def __init__(self, session: Session, request: TailRequest) -> None:
        self.session = session
        self.request = request
        out = session.stdout
        self.out: BinaryIO | None = getattr(out, "buffer", None)

    def write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.write(data)
            self.out.flush()
        else:
            self.session.stdout.write(data.decode(errors="replace"))
            self.session.stdout.flush()

    def run(self) -> int:
        client = self.session.client
        listing = client.call("list")
        if is_error(listing):
            self.session.error(f"tail: {error_line(listing)}")
            return EXIT_ERROR_REPLY
        known = [str(name) for name in listing.get("watchers") or []]
        names, unmatched = match_watchers(self.request.patterns, known)
        if unmatched:
            self.session.error(f"tail: no watcher named {', '.join(map(repr, unmatched))} "
                               f"(watchers: {', '.join(known) or 'none'})")
            return EXIT_ERROR_REPLY
        followers = None
        if self.request.follow:
            endpoint = (client.call("globaloptions").get("options") or {}).get("output_endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                self.session.error(
                    "tail: the arbiter publishes no output (output_endpoint = off); "
                    "--no-follow prints the history alone")
                return EXIT_CALL_ERROR
            followers = _Followers(endpoint, names, self.request.stream)
        history: dict[str, list[HistoryLine]] = {}
        for name in names:
            history[name] = self.history_of(name)
            for line in history[name]:
                self.write(line.data + b"\n" if self.request.raw
                           else _prefix(name, line.wid) + line.data + b"\n")
        if followers is None:
            return EXIT_OK
        try:
            return self.follow(followers, history, followers.blocks.qsize())
        finally:
            followers.stopped.set()

    def targets(self, name: str) -> dict[StreamTarget, list[str]]:
        """Where the watcher's streams asked for are kept, each place once, with its streams."""
        reply = self.session.client.call("options", name=name)
        options = reply.get("options") if not is_error(reply) else None
        if not isinstance(options, dict):
            self.session.error(f"tail: {name}: no options ({error_line(reply)}): no history")
            return {}
        streams = [self.request.stream] if self.request.stream else ["stdout", "stderr"]
        found: dict[StreamTarget, list[str]] = {}
        for stream in streams:
            found.setdefault(stream_target(options, stream), []).append(stream)
        return found

    def history_of(self, name: str) -> list[HistoryLine]:
        request = self.request
        if request.lines == 0:
            return []
        lines: list[HistoryLine] = []
        for target, streams in self.targets(name).items():
            if target.where is Where.FILE:
                if request.since is not None:
                    self.session.error(f"tail: {name}: --since needs the journal; its output "
                                       f"goes to {target.path}, whose lines carry no time: "
                                       f"showing the last {request.lines or DEFAULT_LINES}")
                try:
                    lines += file_tail(target.path, request.lines or DEFAULT_LINES)
                except OSError as exc:
                    self.session.error(f"tail: {name}: cannot read {target.path}: "
                                       f"{exc.strerror}")
            elif target.where is Where.JOURNAL:
                try:
                    lines += journal_tail(name, request.lines, request.since)
                except ImportError:
                    self.session.error(f"tail: {name}: reading the journal needs systemd-python")
                except OSError as exc:
                    self.session.error(f"tail: {name}: cannot read the journal: {exc}")
            else:
                self.session.error(f"tail: {name}: no history of its {' and '.join(streams)} "
                                   f"({target.why})")
        return lines

    def follow(self, followers: _Followers, history: dict[str, list[HistoryLine]],
               overlap: int) -> int:
        """Print live blocks; the first `overlap` ones came while the history was read, so
        their lines the history already showed are left out."""
        seen = {name: {line.data for line in lines} for name, lines in history.items()}
        while True:
            try:
                item = followers.blocks.get(timeout=1.0)
            except queue.Empty:
                continue
            if isinstance(item, CallError):
                self.session.error(f"tail: {item}")
                return EXIT_CALL_ERROR
            if item.lost:
                self.session.error(f"tail: {item.lost} block(s) of {item.watcher} "
                                   f"{item.stream} lost: too slow")
            data = item.data
            if overlap:
                overlap -= 1
                data = _without_seen(data, seen.get(item.watcher, set()))
                if not data:
                    continue
            self.write(data if self.request.raw
                       else prefixed(data, _prefix(item.watcher, item.wid)))


def _without_seen(data: bytes, seen: set[bytes]) -> bytes:
    kept = [line for line in data[:-1].split(b"\n") if line not in seen]
    return b"".join(line + b"\n" for line in kept)


def run_tail(session: Session, invocation: Invocation) -> int:
    try:
        request = tail_request(invocation, time.time())
    except UsageError as exc:
        session.error(str(exc))
        return EXIT_USAGE
    try:
        return TailCommand(session, request).run()
    except CallError as exc:
        session.error(f"tail: {exc}")
        return EXIT_CALL_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
