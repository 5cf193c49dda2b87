"""Files the Debian package derives from the command table (circus_sd.control.registry, the
table the server dispatches from and circusctl parses with), so they cannot drift from it:

    python3 packaging/deb/generate.py completion     # bash completion for circusctl
    python3 packaging/deb/generate.py man-commands   # help2man --include: COMMANDS, ENVIRONMENT

debian/rules runs it against the package being built (PYTHONPATH = its dist-packages).
"""

from __future__ import annotations

import sys

from circus_sd.client import ENDPOINT_ENV
from circus_sd.control.registry import COMMANDS, POSITIONAL, Command, Kind, Param
from circus_sd.ctl.commandline import (
    CLIENT_COMMANDS,
    GLOBAL_HELP,
    ClientCommand,
    flags_of,
    known_commands,
)

# The global options that take a value (the others are switches), as GLOBAL_HELP shows them.
GLOBAL_VALUES = ("--endpoint", "--pubsub-endpoint", "--timeout")


def global_options() -> list[str]:
    """The options GLOBAL_HELP lists: the first word of each of its lines that starts with --."""
    words = [line.split()[0].rstrip(",") for line in GLOBAL_HELP.splitlines() if line.strip()]
    return [word for word in words if word.startswith("--")]


def entry_of(name: str) -> Command | ClientCommand:
    return COMMANDS[name] if name in COMMANDS else CLIENT_COMMANDS[name]


def first_argument(name: str) -> str | None:
    """What a command's first positional argument is: `name` (a watcher), `command` or None."""
    params: tuple[Param, ...] = entry_of(name).params
    first = next((param for param in params if param.kind in POSITIONAL), None)
    return first.name if first is not None and first.name in ("name", "command") else None


def completion() -> str:
    flags_case, values_case, choices_case = [], [], []
    watcher_commands, help_commands = [], []
    for name in known_commands():
        flags = flags_of(name)
        if flags:
            spelled = " ".join("--" + flag.switch for flag in flags.values())
            flags_case.append(f'        {name}) echo "{spelled}" ;;')
        for flag in flags.values():
            option = "--" + flag.switch
            if flag.kind is Kind.VALUE:
                values_case.append(f"        {name}:{option}) return 0 ;;")
            if flag.choices:
                choices_case.append(f'        {name}:{option}) echo "{" ".join(flag.choices)}" ;;')
        kind = first_argument(name)
        if kind == "name" and name != "add":  # add names a new watcher
            watcher_commands.append(name)
        elif kind == "command":
            help_commands.append(name)
    globals_ = global_options()
    missing = [option for option in GLOBAL_VALUES if option not in globals_]
    assert not missing, f"GLOBAL_HELP no longer shows {missing}"
    return TEMPLATE.format(
        commands=" ".join(known_commands()),
        global_values="|".join(GLOBAL_VALUES),
        globals=" ".join(globals_),
        flags_case="\n".join(flags_case),
        values_case="\n".join(values_case),
        choices_case="\n".join(choices_case),
        watcher_commands="|".join(watcher_commands),
        help_commands="|".join(help_commands),
    )


TEMPLATE = r"""# bash completion for circusctl. Generated from circus-sd's command table by
# packaging/deb/generate.py: do not edit. Watcher names come from the running arbiter
# (`circusctl list`, with the --endpoint given on the line or $CIRCUSCTL_ENDPOINT).

_circusctl_flags() {{
    case $1 in
{flags_case}
    esac
}}

# Succeeds when COMMAND's switch takes a value (the next word is not a command argument).
_circusctl_takes_value() {{
    case $1:$2 in
{values_case}
    esac
    return 1
}}

_circusctl_choices() {{
    case $1:$2 in
{choices_case}
    esac
}}

_circusctl() {{
    # Words from the line itself: COMP_WORDS splits ipc://... endpoints at ':'.
    local line=${{COMP_LINE:0:COMP_POINT}} cur="" prev="" word command="" i
    local -a words endpoint=()
    local nargs=0
    read -ra words <<< "$line"
    if [[ $line != *[[:space:]] && ${{#words[@]}} -gt 0 ]]; then
        cur=${{words[-1]}}
        unset 'words[-1]'
    fi
    (( ${{#words[@]}} > 1 )) && prev=${{words[-1]}}
    COMPREPLY=()
    for ((i = 1; i < ${{#words[@]}}; i++)); do
        word=${{words[i]}}
        case $word in
            {global_values})
                [[ $word == --endpoint ]] && endpoint=(--endpoint "${{words[i+1]}}")
                ((i++))
                continue ;;
            --endpoint=*) endpoint=("$word"); continue ;;
            -*)
                if [[ -n $command ]] && _circusctl_takes_value "$command" "$word"; then
                    ((i++))
                fi
                continue ;;
        esac
        if [[ -z $command ]]; then command=$word; else ((nargs++)); fi
    done
    case $prev in
        {global_values}) return 0 ;;
    esac
    if [[ -n $command && $prev == -* ]]; then
        local choices
        choices=$(_circusctl_choices "$command" "$prev")
        if [[ -n $choices ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$choices" -- "$cur")
            return 0
        fi
        _circusctl_takes_value "$command" "$prev" && return 0
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "{globals} $(_circusctl_flags "$command")" -- "$cur")
    elif [[ -z $command ]]; then
        mapfile -t COMPREPLY < <(compgen -W "{commands}" -- "$cur")
    elif (( nargs == 0 )); then
        case $command in
            {help_commands})
                mapfile -t COMPREPLY < <(compgen -W "{commands}" -- "$cur") ;;
            {watcher_commands})
                local names
                names=$("${{words[0]}}" "${{endpoint[@]}}" --timeout 2 list 2>/dev/null)
                mapfile -t COMPREPLY < <(compgen -W "${{names//,/ }}" -- "$cur") ;;
        esac
    fi
    return 0
}}
complete -F _circusctl circusctl
"""


def roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def man_commands() -> str:
    lines = ["[COMMANDS]"]
    for name in known_commands():
        entry = entry_of(name)
        lines += [".TP", f".B circusctl {roff(entry.usage)}", roff(entry.doc)]
        if isinstance(entry, Command) and entry.waitable:
            lines.append("Replies at once; with \\-\\-waiting, when the operation is done.")
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
        ".BR circus\\-sd (1)",
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
