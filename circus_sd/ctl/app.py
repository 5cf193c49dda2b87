"""circusctl's main: parse, send, print; exit 0 ok, 3 error reply, 1 no reply, 2 usage."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from circus_sd import __version__, endpoints
from circus_sd.client import CallError, CircusClient, resolve_endpoint, subscribe
from circus_sd.ctl.commandline import (
    PROG,
    GlobalOptions,
    Invocation,
    UsageError,
    command_help,
    general_help,
    known_commands,
    parse_argv,
    usage_line,
)
from circus_sd.ctl.endpoint_choice import choose_endpoint
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
        # What help shows; the endpoint used is chosen when connecting (endpoint_choice).
        self.endpoint = resolve_endpoint(options.endpoint)
        # Connected on first use: `--help` or a usage error never touch ZMQ.
        self._client = client
        self._consoles: tuple[Console, Console] | None = None

    @property
    def client(self) -> CircusClient:
        if self._client is None:
            self.endpoint = choose_endpoint(self.options.endpoint)
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
            if command not in known_commands():
                raise UsageError(f"unknown command {command!r} (see `{PROG} --help`)")
            if invocation.options.help:
                self.stdout.write(command_help(command))
                return EXIT_OK
            if command == "listen":
                return self.listen(invocation)
            if command == "tail":
                from circus_sd.ctl.tail import run_tail

                return run_tail(self, invocation)
            if command in ("is-active", "is-failed"):
                from circus_sd.ctl.health import run_health

                return run_health(self, invocation)
            if command == "completion":
                return self.completion(invocation)
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
            if command == "reexec" and not is_error(reply):
                reply = self._took_over(reply)
            stats = None
            if command == "status" and self.fancy and "details" in properties:
                # The compact table's CPU and memory columns; without them if refused.
                named = {"name": properties["name"]} if "name" in properties else {}
                stats = self.client.call("stats", **named)
        except CallError as exc:
            self.error(str(exc))
            return EXIT_CALL_ERROR
        except KeyboardInterrupt:
            return EXIT_CALL_ERROR
        if stats is not None and not is_error(stats):
            # `stats NAME` answers {name, info}; `stats` {infos: {name: info}}.
            infos = stats.get("infos") or (
                {stats["name"]: stats.get("info") or {}} if "name" in stats else {}
            )
            reply = {**reply, "stats": infos, "all": bool(invocation.flags.get("all"))}
        return self.show(command, reply, invocation.options)

    def _took_over(self, reply: dict[str, Any]) -> dict[str, Any]:
        """`reexec` answers before it switches: wait (within --timeout) until the new program
        answers, as `systemctl daemon-reexec` returns once systemd is back."""
        wanted = reply.get("generation", 0)
        deadline = time.monotonic() + self.options.timeout
        while time.monotonic() < deadline:
            # A fresh connection each time: a request sent as the old program closed its end
            # is lost with that connection.
            probe = CircusClient(self.endpoint, min(0.25, max(0.05, deadline - time.monotonic())))
            try:
                options = probe.call("globaloptions")
            except CallError:
                continue  # its endpoint is being bound again
            finally:
                probe.close()
            if options.get("options", {}).get("generation", -1) >= wanted:
                return reply
            time.sleep(0.05)
        return {"status": "error", "reason": (
            f"the arbiter did not come back within {self.options.timeout:g}s after re-executing "
            "(see its log)")}

    def completion(self, invocation: Invocation) -> int:
        from circus_sd.ctl.completion import script

        if len(invocation.args) != 1 or invocation.args[0] not in ("bash", "zsh", "fish"):
            raise UsageError("completion: give one shell: bash, zsh or fish")
        self.stdout.write(script(invocation.args[0]))
        return EXIT_OK

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
    if invocation.command is not None and invocation.command not in known_commands():
        # As Circus's circusctl (argparse): the usage line, exit 2, nothing sent.
        return _usage_error(stderr, f"unknown command {invocation.command!r}")
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
