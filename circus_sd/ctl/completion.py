"""circusctl's completion scripts (bash, zsh, fish), derived from the command table.

`circusctl completion SHELL` prints them (so they work without the package) and the Debian
package installs the bash one (packaging/deb/generate.py). Watcher names come from the running
arbiter (`circusctl list`) when completing.
"""

from __future__ import annotations

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


class Positional:
    """What a command's arguments complete to: watcher names, command names or fixed words."""

    WATCHER = "watcher"
    WATCHERS = "watchers"  # every argument is one (tail, is-active)
    COMMAND = "command"


def first_argument(name: str) -> tuple[str | None, tuple[str, ...]]:
    """(what a command's first positional argument is, its choices if it has fixed ones)."""
    params: tuple[Param, ...] = entry_of(name).params
    first = next((param for param in params if param.kind in POSITIONAL), None)
    if first is None:
        return None, ()
    if first.choices:
        return None, first.choices
    if first.name == "name" and name != "add":  # add names a new watcher
        return Positional.WATCHER, ()
    if first.name == "names":
        return Positional.WATCHERS, ()
    if first.name == "command":
        return Positional.COMMAND, ()
    return None, ()


def _spellings(flag: Param) -> list[str]:
    return ["--" + flag.switch, *(["-" + flag.short] if flag.short else [])]


def bash() -> str:
    flags_case, values_case, choices_case, words_case = [], [], [], []
    by_kind: dict[str, list[str]] = {Positional.WATCHER: [], Positional.WATCHERS: [],
                                     Positional.COMMAND: []}
    for name in known_commands():
        flags = flags_of(name)
        if flags:
            spelled = " ".join("--" + flag.switch for flag in flags.values())
            flags_case.append(f'        {name}) echo "{spelled}" ;;')
        for flag in flags.values():
            for option in _spellings(flag):
                if flag.kind is Kind.VALUE:
                    values_case.append(f"        {name}:{option}) return 0 ;;")
                if flag.choices:
                    choices_case.append(
                        f'        {name}:{option}) echo "{" ".join(flag.choices)}" ;;')
        kind, choices = first_argument(name)
        if kind is not None:
            by_kind[kind].append(name)
        if choices:
            words_case.append(f"            {name}) (( nargs == 0 )) && mapfile -t COMPREPLY < "
                              f'<(compgen -W "{" ".join(choices)}" -- "$cur") ;;')
    globals_ = global_options()
    missing = [option for option in GLOBAL_VALUES if option not in globals_]
    assert not missing, f"GLOBAL_HELP no longer shows {missing}"
    return BASH_TEMPLATE.format(
        commands=" ".join(known_commands()),
        global_values="|".join(GLOBAL_VALUES),
        globals=" ".join(globals_),
        flags_case="\n".join(flags_case),
        values_case="\n".join(values_case),
        choices_case="\n".join(choices_case),
        words_case="\n".join(words_case),
        watcher_commands="|".join(by_kind[Positional.WATCHER]),
        watchers_commands="|".join(by_kind[Positional.WATCHERS]),
        help_commands="|".join(by_kind[Positional.COMMAND]),
    )


BASH_TEMPLATE = r"""# bash completion for circusctl, generated from circus-sd's command table
# (`circusctl completion bash`): do not edit. Watcher names come from the running arbiter
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

_circusctl_watchers() {{
    local names
    names=$("${{words[0]}}" "${{endpoint[@]}}" --timeout 2 list 2>/dev/null)
    mapfile -t COMPREPLY < <(compgen -W "${{names//,/ }}" -- "$cur")
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
    else
        case $command in
            {help_commands})
                (( nargs == 0 )) && mapfile -t COMPREPLY < <(compgen -W "{commands}" -- "$cur") ;;
            {watcher_commands})
                (( nargs == 0 )) && _circusctl_watchers ;;
            {watchers_commands})
                _circusctl_watchers ;;
{words_case}
        esac
    fi
    return 0
}}
complete -F _circusctl circusctl
"""


# -- zsh -----------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    """Text inside a single-quoted zsh word, and safe in an _arguments/_describe spec."""
    cleaned = text.replace("[", "(").replace("]", ")").replace(":", "\\:").replace("`", "")
    return cleaned.replace("'", "'\\''")


def _summary(doc: str) -> str:
    return doc.split(". ")[0].rstrip(".")


def _global_specs() -> list[str]:
    specs = []
    for line in GLOBAL_HELP.splitlines():
        words = line.split()
        if not words or not words[0].startswith("--"):
            continue
        option = words[0].rstrip(",")
        takes_value = option in GLOBAL_VALUES
        doc = _zsh_quote(line.split("  ")[-1].strip() if "  " in line.strip() else option)
        specs.append(f"'{option}[{doc}]" + (":value:'" if takes_value else "'"))
    return specs


def zsh() -> str:
    commands = [f"'{name}:{_zsh_quote(_summary(entry_of(name).doc))}'"
                for name in known_commands()]
    cases = []
    for name in known_commands():
        specs = []
        for flag in flags_of(name).values():
            value = ""
            if flag.kind is Kind.VALUE:
                value = f":{flag.word}:" + (f"({' '.join(flag.choices)})" if flag.choices else "")
            for option in _spellings(flag):
                specs.append(f"'{option}[{flag.switch}]{value}'")
        kind, choices = first_argument(name)
        if kind == Positional.WATCHER:
            specs.append("'1:watcher:_circusctl_watchers'")
        elif kind == Positional.WATCHERS:
            specs.append("'*:watcher:_circusctl_watchers'")
        elif kind == Positional.COMMAND:
            specs.append("'1:command:(" + " ".join(known_commands()) + ")'")
        elif choices:
            specs.append("'1:" + name + ":(" + " ".join(choices) + ")'")
        if specs:
            cases.append(f"        {name}) _arguments {' '.join(specs)} ;;")
    return ZSH_TEMPLATE.format(
        commands="\n        ".join(commands),
        globals=" \\\n        ".join(_global_specs()),
        cases="\n".join(cases),
    )


ZSH_TEMPLATE = r"""#compdef circusctl
# zsh completion for circusctl, generated from circus-sd's command table
# (`circusctl completion zsh`): do not edit. Load it with
# `source <(circusctl completion zsh)` after compinit, or save it as _circusctl in $fpath.

_circusctl_watchers() {{
    local -a names endpoint
    local i
    for ((i = 1; i < $#words; i++)); do
        [[ $words[i] == --endpoint ]] && endpoint=(--endpoint $words[i+1])
        [[ $words[i] == --endpoint=* ]] && endpoint=($words[i])
    done
    names=(${{(s:,:)"$(circusctl $endpoint --timeout 2 list 2>/dev/null)"}})
    compadd -a names
}}

_circusctl() {{
    local curcontext=$curcontext state line
    local -a commands
    commands=(
        {commands}
    )
    _arguments -C \
        {globals} \
        '1:command:->command' \
        '*::argument:->argument'
    case $state in
        command) _describe -t commands 'circusctl command' commands ;;
        argument)
            curcontext=${{curcontext%:*:*}}:circusctl-$words[1]:
            case $words[1] in
{cases}
            esac ;;
    esac
}}

compdef _circusctl circusctl
"""


# -- fish ----------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish() -> str:
    lines = [
        "# fish completion for circusctl, generated from circus-sd's command table",
        "# (`circusctl completion fish`): do not edit. Load it with",
        "# `circusctl completion fish | source`, or save it in ~/.config/fish/completions/.",
        "",
        "function __circusctl_watchers",
        "    circusctl --timeout 2 list 2>/dev/null | string split ,",
        "end",
        "",
        "complete -c circusctl -f",
    ]
    all_commands = " ".join(known_commands())
    for line in GLOBAL_HELP.splitlines():
        words = line.split()
        if words and words[0].startswith("--"):
            option = words[0].rstrip(",")[2:]
            takes = " -r" if "--" + option in GLOBAL_VALUES else ""
            lines.append(f"complete -c circusctl -l {option}{takes}")
    for name in known_commands():
        lines.append(f"complete -c circusctl -n '__fish_use_subcommand' -a {name} "
                     f"-d {_fish_quote(_summary(entry_of(name).doc))}")
    for name in known_commands():
        seen = f"-n '__fish_seen_subcommand_from {name}'"
        for flag in flags_of(name).values():
            spec = f"complete -c circusctl {seen} -l {flag.switch}"
            if flag.short:
                spec += f" -s {flag.short}"
            if flag.kind is Kind.VALUE:
                spec += " -x" + (f" -a {_fish_quote(' '.join(flag.choices))}"
                                 if flag.choices else "")
            lines.append(spec)
        kind, choices = first_argument(name)
        if kind in (Positional.WATCHER, Positional.WATCHERS):
            lines.append(f"complete -c circusctl {seen} -a '(__circusctl_watchers)'")
        elif kind == Positional.COMMAND:
            lines.append(f"complete -c circusctl {seen} -a {_fish_quote(all_commands)}")
        elif choices:
            lines.append(f"complete -c circusctl {seen} -a {_fish_quote(' '.join(choices))}")
    return "\n".join(lines) + "\n"


SCRIPTS = {"bash": bash, "zsh": zsh, "fish": fish}


def script(shell: str) -> str:
    """The completion script for `shell` (one of commandline.SHELLS)."""
    return SCRIPTS[shell]()
