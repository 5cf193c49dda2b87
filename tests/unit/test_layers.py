"""No upward arrows: which parts of circus_sd may import which, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "circus_sd"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every circus_sd module the file imports, at the top or inside a function (what only
    type checkers read, under `if TYPE_CHECKING:`, is left out)."""
    tree = ast.parse(path.read_text(), str(path))
    checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                checking_only.update(id(n) for n in ast.walk(inner))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in checking_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "circus_sd"}


MODULES = {module_name(p): imported(p) for p in sorted(PACKAGE.rglob("*.py"))}


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# (who, what it must not import, why)
RULES = [
    (
        ("circus_sd.config",),
        (
            "circus_sd.arbiter", "circus_sd.control", "circus_sd.ctl", "circus_sd.plugins",
            "circus_sd.watcher", "circus_sd.launcher", "circus_sd.output", "circus_sd.spawner",
            "circus_sd.spawn_plan", "circus_sd.cli",
        ),
        "the configuration is read before anything runs, and by circusctl's tools",
    ),
    (
        ("circus_sd.output",),
        (
            "circus_sd.arbiter", "circus_sd.control", "circus_sd.spawner",
            "circus_sd.spawn_server", "circus_sd.launcher",
        ),
        "output sinks know lines and files, not who spawns the writers",
    ),
    (
        (
            "circus_sd.arbiter", "circus_sd.launcher", "circus_sd.watcher", "circus_sd.orphans",
            "circus_sd.watcher_hooks", "circus_sd.reload_plan", "circus_sd.hooks",
            "circus_sd.output", "circus_sd.config", "circus_sd.spawner", "circus_sd.spawn_plan",
        ),
        ("circus_sd.control", "circus_sd.ctl", "circus_sd.plugins", "circus_sd.cli"),
        "the control layer drives the arbiter, never the reverse",
    ),
    (
        (
            "circus_sd.watcher", "circus_sd.watcher_events", "circus_sd.watcher_table",
            "circus_sd.states", "circus_sd.actions", "circus_sd.restart_policy",
        ),
        (
            "circus_sd.arbiter", "circus_sd.launcher", "circus_sd.spawner", "circus_sd.output",
            "circus_sd.process", "circus_sd.hooks", "circus_sd.cgroups",
        ),
        "the watcher's state machine is pure: no I/O module below it",
    ),
    (
        ("circus_sd.spawn_server", "circus_sd.spawn_protocol"),
        ("circus_sd",),
        "the spawner's program is a bare interpreter: the standard library and its protocol only",
    ),
]


def _shared(target: str) -> bool:
    """The spawner's protocol is loaded by both sides (spawner.fork_spawner sends its source)."""
    return under(target, "circus_sd.spawn_protocol")


@pytest.mark.parametrize(("who", "forbidden", "why"), RULES, ids=[r[2] for r in RULES])
def test_no_module_imports_upward(
    who: tuple[str, ...], forbidden: tuple[str, ...], why: str
) -> None:
    offences = sorted(
        f"{module} imports {target}"
        for module, targets in MODULES.items()
        if under(module, *who)
        for target in targets
        if under(target, *forbidden) and not under(target, module) and not _shared(target)
    )
    assert not offences, f"{why}:\n" + "\n".join(offences)


def test_the_rules_name_modules_that_exist() -> None:
    """A rule about a renamed module would pass for ever."""
    known = set(MODULES)
    for who, forbidden, _why in RULES:
        for name in (*who, *forbidden):
            assert name == "circus_sd" or any(under(m, name) for m in known), name
