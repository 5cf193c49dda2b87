"""circus-sd.ini(5), the configuration format's manual page, generated from the option
declarations (`python -m circus_sd.config.manpage > circus-sd.ini.5`)."""

from __future__ import annotations

import re
import sys

from circus_sd import __version__
from circus_sd.access import Tier
from circus_sd.config.doc import OptionRow, option_rows
from circus_sd.config.model import ArbiterConfig, SocketConfig, WatcherConfig
from circus_sd.config.streams import StreamConfig

_CODE = re.compile(r"`([^`]*)`")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")

_TIER_TEXT = {
    Tier.READ: "anyone who may connect",
    Tier.OPERATE: "root, the arbiter's user and endpoint_group members",
    Tier.ADMIN: "root and the arbiter's user only",
}


def roff_text(markdown: str) -> str:
    """A line of the declarations' Markdown as roff: `code` in bold, escapes where roff needs
    them (backslashes, minus signs, a leading dot or quote)."""
    text = _LINK.sub(r"\1", markdown).replace("\\", "\\e").replace("-", "\\-")
    text = _CODE.sub(r"\\fB\1\\fR", text)
    # The page stays ASCII: groff reads other characters as its named glyphs.
    text = "".join(c if c.isascii() else f"\\[u{ord(c):04X}]" for c in text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _entries(rows: list[OptionRow], settable: bool) -> list[str]:
    lines: list[str] = []
    for row in rows:
        lines += [".TP", f".B {roff_text(row.key)}", roff_text(row.doc)]
        default = "none" if row.default == "\u2014" else roff_text(row.default)
        facts = [f"Default: {default}."]
        if row.live:
            facts.append("Applies live: a change (by a reload or set) restarts no process.")
        elif settable:
            facts.append("A change restarts the watcher's processes.")
        if settable and row.key == "env_file":
            # Its files are read with the configuration file (control/watcher_options.py).
            facts.append("Not changed with set: edit the file, then reload.")
        elif settable:
            facts.append(f"Changed with set by: {_TIER_TEXT[row.tier]}.")
        lines += [".br", " ".join(facts)]
    return lines


_HEADER = r""".TH CIRCUS\-SD.INI 5 "" "circus\-sd {version}" "File Formats"
.SH NAME
circus\-sd.ini \- configuration file of the circus\-sd process supervisor
.SH SYNOPSIS
.B /etc/circus\-sd/circus.ini
.br
.B /etc/circus\-sd/conf.d/*.ini
.SH DESCRIPTION
The file is an INI file read as Circus 0.19 reads it: sections named in brackets, one
.I key " = " value
per line, comment lines starting with # or ; in the first column, indented lines continuing
the value above. A key set twice keeps its first value. Keys are case\-insensitive, except
variable names in environment sections.
.PP
.B [circus]
sets up the arbiter,
.BI [watcher: NAME ]
declares a program run as one or more processes,
.BI [socket: NAME ]
a socket the arbiter binds and hands to its watchers,
.B [env]
and
.BI [env: NAMES ]
environment variables, and
.BI [plugin: NAME ]
a plugin (see the README).
.B include
and
.B include_dir
in
.B [circus]
read more files (globs, relative to the including file).
.PP
.B $(circus.env.VAR)
is replaced by the arbiter's environment (and
.BR [env] )
when the file is read;
.BR $(circus.wid) ,
.B $(circus.env.VAR)
and
.B $(circus.sockets.NAME)
in
.BR cmd ,
.B args
and environment values are filled for each process when it is spawned.
.PP
The file is read at start and again at each reload
.RB ( "systemctl reload circus\-sd" ,
.BR "circusctl reloadconfig" ,
SIGHUP). A file that cannot be used is refused as a whole, with its file, line and option,
and the running configuration is kept. A reload applies only what changed: watchers whose
changes all apply live keep their processes, others are restarted, added watchers are
started and removed ones stopped. Changes to
.B [circus]
take effect at the next start of circus\-sd.
"""

_ENVIRONMENT = r""".SH "[env] AND [env:NAMES] SECTIONS"
Each key is an environment variable (its case is kept) given to the processes of every
watcher
.RB ( [env] )
or of the watchers whose names match one of the comma\-separated names or globs
.RB ( [env:web,db] ,
.BR [env:api\-*] ).
Sections apply in the order of the file, a later one over an earlier one.
.B $VAR
and
.B ${VAR}
in values expand at each spawn against the values set before them, then the arbiter's
environment.
.TP
.B env_file
In an environment section, the one key that is no variable: files read as described under
ENVIRONMENT FILES, whose variables go over the section's own keys.
.SH "ENVIRONMENT FILES"
.B env_file
(in
.BI [watcher: NAME ]
and in environment sections) names files separated by blanks, read in order, a later file over
an earlier one; a relative path is taken from the directory of the configuration file that
names it. A missing file is an error unless its path starts with
.BR \- ,
as with systemd's
.BR EnvironmentFile= .
The files are read when the configuration is read: at start and at each reload (a changed
file takes effect at the next reload, and restarts the watchers whose environment changed).
A process's environment is built in this order, a later one winning: the arbiter's
environment (with
.BR copy_env ),
.B [env]
and its files,
.BI [env: NAMES ]
sections and their files in the order of the configuration, then the watcher's own
.BR env_file .
.PP
The files have the syntax of systemd's
.B EnvironmentFile=
(systemd 252):
.B KEY=VALUE
lines; lines starting with # or ; are comments; blanks around the key and before the value
are dropped, and trailing blanks of an unquoted value; a backslash takes the next character
literally and a backslash at the end of a line joins the next one; single quotes keep
everything literally, newlines included; in double quotes a backslash escapes only ", \e, `
and $. Nothing is expanded. Unlike systemd, which drops them, a line without =, a name that
is not a variable name (such as
.BR "export KEY=VALUE" ),
an unterminated quote and text that is not UTF\-8 are errors naming the file and line.
"""

_FOOTER = r""".SH FILES
.TP
.B /etc/circus\-sd/circus.ini
the configuration of the circus\-sd service.
.TP
.B /etc/circus\-sd/conf.d/
drop\-in files, included by the packaged configuration
.RB ( include_dir ).
.SH "SEE ALSO"
.BR circus\-sd (1),
.BR circusctl (1),
.BR systemd.exec (5)
.PP
/usr/share/doc/circus\-sd/README.md
"""


def manpage() -> str:
    """The whole page, in man(7) roff."""
    sections = [
        _HEADER.format(version=__version__),
        '.SH "[circus] SECTION"',
        "The arbiter's own options. A change applies at the next start of circus\\-sd.",
        *_entries(option_rows(ArbiterConfig), settable=False),
        '.SH "[watcher:NAME] SECTIONS"',
        "One per program. NAME: letters, digits, _, . and \\-.",
        "Options are changed by a reload or, over the control socket, by",
        ".BR \"circusctl set\" ;",
        "who may change them there is given with each.",
        *_entries(option_rows(WatcherConfig), settable=True),
        ".TP",
        ".B rlimit_NAME",
        "Any RLIMIT_* of the platform",
        ".RB ( rlimit_nofile ,",
        ".BR rlimit_core ,",
        "and so on): a number (soft = hard),",
        ".IR SOFT : HARD ,",
        "or empty or",
        ".B infinity",
        "for no limit.",
        ".TP",
        ".B hooks.NAME",
        "A Python callable",
        ".RI ( module . function )",
        "run at a point of a process's life; see the README.",
        '.SH "OUTPUT STREAMS"',
        "Keys",
        ".BI stdout_stream. KEY",
        "and",
        ".BI stderr_stream. KEY",
        "in",
        ".BI [watcher: NAME ]",
        "say where each process's output goes:",
        *_entries(option_rows(StreamConfig), settable=False),
        '.SH "[socket:NAME] SECTIONS"',
        "A socket bound by the arbiter (or passed by systemd) and handed to the watchers that",
        "set",
        ".BR use_sockets ;",
        "a changed one is bound again at a reload.",
        *_entries(option_rows(SocketConfig), settable=False),
        _ENVIRONMENT.rstrip("\n"),
        _FOOTER.rstrip("\n"),
    ]
    return "\n".join(sections) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
