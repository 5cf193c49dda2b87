"""circusctl without a command: an interactive shell completing command and watcher names."""

from __future__ import annotations

import cmd
import shlex
import sys
import time
from typing import TYPE_CHECKING

from circus_sd.client import CallError
from circus_sd.ctl.commandline import UsageError, command_help, general_help, known_commands
from circus_sd.ctl.commandline import parse_argv as parse_line

if TYPE_CHECKING:
    from circus_sd.ctl.app import Session

# Completion asks the arbiter for its watchers at most this often.
_NAMES_TTL = 2.0


class CircusShell(cmd.Cmd):
    prompt = "(circusctl) "

    def __init__(self, session: Session) -> None:
        super().__init__(stdin=sys.stdin, stdout=session.stdout)
        self.session = session
        self._names: list[str] = []
        self._names_at = -_NAMES_TTL

    # -- commands ------------------------------------------------------------------------------

    def default(self, line: str) -> None:
        """Any command of circusctl's command line, run on the shell's connection."""
        try:
            invocation = parse_line(shlex.split(line), self.session.options)
        except (UsageError, ValueError) as exc:
            self.session.error(str(exc))
            return
        options, own = invocation.options, self.session.options
        if (options.endpoint, options.timeout) != (own.endpoint, own.timeout):
            self.session.error("--endpoint and --timeout apply to the whole shell: restart "
                               "circusctl with them")
            return
        if invocation.command == "quit" and not self._confirm_quit():
            return
        self.session.run(invocation)

    def _confirm_quit(self) -> bool:
        # In Circus's shell `quit` stops the arbiter, not the shell: make that hard to do by
        # accident (`exit` or Ctrl-D leave the shell).
        if not sys.stdin.isatty():
            return True
        answer = input("quit stops the arbiter and every watcher; `exit` leaves this shell. "
                       "Stop the arbiter? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    def do_help(self, arg: str) -> None:
        try:
            text = command_help(arg.strip().lower()) if arg.strip() else general_help(
                self.session.endpoint)
        except UsageError as exc:
            self.session.error(str(exc))
            return
        self.session.stdout.write(text)

    def do_exit(self, arg: str) -> bool:
        """Leave the shell (the arbiter keeps running)."""
        return True

    def do_EOF(self, arg: str) -> bool:
        self.session.stdout.write("\n")
        return True

    def emptyline(self) -> bool:
        return False  # cmd.Cmd would repeat the last command: never what one wants here

    # -- completion ----------------------------------------------------------------------------

    def completenames(self, text: str, *ignored: object) -> list[str]:
        return [name for name in [*known_commands(), "exit"] if name.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [name for name in self.watcher_names() if name.startswith(text)]

    def complete_help(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [name for name in known_commands() if name.startswith(text)]

    def watcher_names(self) -> list[str]:
        now = time.monotonic()
        if now - self._names_at >= _NAMES_TTL:
            self._names_at = now
            try:
                reply = self.session.client.call("list")
            except CallError:
                return self._names
            watchers = reply.get("watchers")
            if isinstance(watchers, list):
                self._names = [str(name) for name in watchers]
        return self._names


def run_shell(session: Session) -> int:
    from circus_sd.ctl.app import VERSION

    shell = CircusShell(session)
    session.stdout.write(VERSION + "\n")
    shell.onecmd("status")  # as Circus's shell does: show where things stand first
    while True:
        try:
            shell.cmdloop()
            return 0
        except KeyboardInterrupt:
            # Ctrl-C abandons the line being typed, not the shell.
            session.stdout.write("^C\n")
