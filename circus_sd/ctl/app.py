"""circusctl's main: parse, send, print; exit 0 ok, 3 error reply, 1 no reply, 2 usage."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from circus_sd import __version__, endpoints
from circus_sd.client import CallError, CircusClient, follow_output, resolve_endpoint, subscribe
from circus_sd.ctl.commandline import (
    PROG,
    GlobalOptions,
    Invocation,
    UsageError,
    command_help,
    general_help,
    parse_argv,
    usage_line,
)
from circus_sd.ctl.plain import format_reply, is_error
from circus_sd.ctl.properties import build_properties

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
EXIT_CALL_ERROR = 1
EXIT_USAGE = 2
EXIT_ERROR_REPLY = 3

VERSION = f"{PROG} {__version__} (circus-sd)"


class Session:
    """One arbiter connection and where output goes; a shell runs many commands on it."""

    def __init__(self, options: GlobalOptions, stdout: TextIO, stderr: TextIO,
                 fancy: bool | None = None, client: CircusClient | None = None) -> None:
        self.options = options
        self.stdout = stdout
        self.stderr = stderr
        self.fancy = stdout.isatty() if fancy is None else fancy
        self.endpoint = resolve_endpoint(options.endpoint)
        # Connected on first use: `--help` or a usage error never touch ZMQ.
        self._client = client
        self._consoles: tuple[Console, Console] | None = None

    @property
    def client(self) -> CircusClient:
        if self._client is None:
            self._client = CircusClient(self.endpoint, self.options.timeout)
        return self._client

    def consoles(self) -> tuple[Console, Console]:
        """(stdout, stderr) rich consoles, made on first use: plain output never imports rich."""
        if self._consoles is None:
            from rich.console import Console

            self._consoles = (Console(file=self.stdout, highlight=False),
                              Console(file=self.stderr, highlight=False))
        return self._consoles

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def error(self, message: str) -> None:
        print(f"{PROG}: {message}", file=self.stderr)

    # -- running one command ---------------------------------------------------------------------

    def run(self, invocation: Invocation) -> int:
        command = invocation.command
        assert command is not None
        try:
            if command == "help":
                if len(invocation.args) > 1:
                    raise UsageError("help: give at most one command")
                text = (command_help(invocation.args[0].lower()) if invocation.args
                        else general_help(self.endpoint))
                self.stdout.write(text)
                return EXIT_OK
            if invocation.options.help:
                self.stdout.write(command_help(command))
                return EXIT_OK
            if command == "listen":
                return self.listen(invocation)
            if command == "tail":
                return self.tail(invocation)
            if command == "top":
                from circus_sd.ctl.top import run_top

                return run_top(self, invocation)
            properties = build_properties(command, invocation.args, invocation.flags)
            if command == "status" and self.fancy and not (
                invocation.options.json or invocation.options.prettify
            ):
                properties["details"] = True  # the table shows them
        except UsageError as exc:
            self.error(str(exc))
            return EXIT_USAGE
        try:
            reply = self.client.call(command, **properties)
        except CallError as exc:
            self.error(str(exc))
            return EXIT_CALL_ERROR
        except KeyboardInterrupt:
            return EXIT_CALL_ERROR
        return self.show(command, reply, invocation.options)

    def show(self, command: str, reply: dict[str, Any], options: GlobalOptions) -> int:
        """Print a reply as asked (JSON, tables, or Circus's lines); the exit status it means."""
        status = EXIT_ERROR_REPLY if is_error(reply) else EXIT_OK
        if options.json or options.prettify:
            if options.prettify:
                print(json.dumps(reply, indent=2, sort_keys=True), file=self.stdout)
            else:
                print(json.dumps(reply), file=self.stdout)
        elif self.fancy:
            from circus_sd.ctl.fancy import render

            render(*self.consoles(), command, reply, time.time())
        else:
            # Circus prints an error reply on stderr, everything else on stdout.
            print(format_reply(command, reply), file=self.stderr if status else self.stdout)
        return status

    def pubsub_endpoint(self, options: GlobalOptions) -> str:
        """--pubsub-endpoint, else what the arbiter says it publishes on, else the default."""
        if options.pubsub_endpoint:
            return options.pubsub_endpoint
        reply = self.client.call("globaloptions")
        found = (reply.get("options") or {}).get("pubsub_endpoint")
        return found if isinstance(found, str) and found else endpoints.default_pubsub_endpoint()

    def listen(self, invocation: Invocation) -> int:
        """Print `topic json` per event until interrupted."""
        try:
            endpoint = self.pubsub_endpoint(invocation.options)
            for topic, payload in subscribe(endpoint, invocation.args):
                print(f"{topic} {json.dumps(payload)}", file=self.stdout, flush=True)
        except CallError as exc:
            self.error(f"listen: {exc}")
            return EXIT_CALL_ERROR
        except KeyboardInterrupt:
            pass
        return EXIT_OK


    def tail(self, invocation: Invocation) -> int:
        """Write a watcher's output lines as they come, until interrupted."""
        if len(invocation.args) != 1:
            raise UsageError("tail: give one watcher name")
        (name,) = invocation.args
        stream = invocation.flags.get("stream")
        raw = bool(invocation.flags.get("raw"))
        try:
            # Fails early on an unknown name; names match case-insensitively: the real one.
            known = self.client.call("status", name=name, details=True)
            if is_error(known):
                return self.show("status", known, invocation.options)
            name = next(iter(known.get("details") or {}), name)
            options = self.client.call("globaloptions").get("options") or {}
            endpoint = options.get("output_endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                self.error("tail: the arbiter publishes no output (output_endpoint = off)")
                return EXIT_CALL_ERROR
            out = self.stdout.buffer if hasattr(self.stdout, "buffer") else None
            for block in follow_output(endpoint, name, stream if isinstance(stream, str) else None):
                if block.lost:
                    self.error(f"tail: {block.lost} block(s) of {block.stream} lost: too slow")
                data = block.data if raw else _prefixed(block.data, f"{name}[{block.wid}] ")
                if out is not None:
                    out.write(data)
                    out.flush()
                else:
                    self.stdout.write(data.decode(errors="replace"))
                    self.stdout.flush()
        except CallError as exc:
            self.error(f"tail: {exc}")
            return EXIT_CALL_ERROR
        except KeyboardInterrupt:
            pass
        return EXIT_OK


def _prefixed(data: bytes, prefix: str) -> bytes:
    """Each line of `data` (whole lines) after `prefix`."""
    head = prefix.encode()
    return head + data[:-1].replace(b"\n", b"\n" + head) + data[-1:]


def _usage_error(stderr: TextIO, message: str) -> int:
    print(f"{PROG}: {message}", file=stderr)
    print(f"{usage_line()}  (see `{PROG} --help`)", file=stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stdout, stderr = sys.stdout, sys.stderr
    try:
        invocation = parse_argv(args)
    except UsageError as exc:
        return _usage_error(stderr, str(exc))
    options = invocation.options
    if options.version:
        print(VERSION, file=stdout)
        return EXIT_OK
    session = Session(options, stdout, stderr)
    try:
        if invocation.command is None:
            if options.help:
                stdout.write(general_help(session.endpoint))
                return EXIT_OK
            from circus_sd.ctl.shell import run_shell

            return run_shell(session)
        return session.run(invocation)
    except BrokenPipeError:
        # `circusctl listen | head -1`: the reader left; do not complain at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        return EXIT_OK
    finally:
        session.close()
