"""Files the Debian package derives from the command table (circus_sd.control.registry, the
table the server dispatches from and circusctl parses with), so they cannot drift from it:

    python3 packaging/deb/generate.py completion     # bash completion for circusctl
    python3 packaging/deb/generate.py man-commands   # help2man --include: COMMANDS, ENVIRONMENT

debian/rules runs it against the package being built (PYTHONPATH = its dist-packages).
"""

from __future__ import annotations

import sys

from circus_sd.client import ENDPOINT_ENV
from circus_sd.control.registry import Command
from circus_sd.ctl.commandline import DISPLAY_NOTES, known_commands
from circus_sd.ctl.completion import bash, entry_of


def completion() -> str:
    """The bash completion the package installs: `circusctl completion bash`'s."""
    return bash()


def roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def man_commands() -> str:
    lines = ["[COMMANDS]"]
    for name in known_commands():
        entry = entry_of(name)
        lines += [".TP", f".B circusctl {roff(entry.usage)}", roff(entry.doc)]
        if isinstance(entry, Command) and entry.waitable:
            lines.append("Replies at once; with \\-\\-waiting, when the operation is done.")
        if name in DISPLAY_NOTES:
            lines.append(roff(DISPLAY_NOTES[name]))
    lines += [
        "",
        "[ENVIRONMENT]",
        ".TP",
        f".B {ENDPOINT_ENV}",
        "the control endpoint when \\-\\-endpoint is not given.",
        "",
        "[ACCESS]",
        "The circus\\-sd service's control socket is /run/circus\\-sd/control.sock, mode 0660,",
        "group circus\\-sd (endpoint_group in /etc/circus\\-sd/circus.ini). Root may run every",
        "command; members of the circus\\-sd group may read and drive the configured watchers",
        "(status, start, stop, incr...), but not add, rm, reloadconfig, quit or set what runs or",
        "as whom. Other users are refused.",
        "",
        "[SEE ALSO]",
        ".BR circus\\-sd (1),",
        ".BR circus\\-sd.ini (5)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["completion"]:
        sys.stdout.write(completion())
    elif argv[1:] == ["man-commands"]:
        sys.stdout.write(man_commands())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
