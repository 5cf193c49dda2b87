"""Options parsed into changes of a watcher, and applied: one path for the config file (onto a
new watcher) and for `add`/`set` (onto the watcher as it is)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from circus_sd.config.model import HookImportError, HookSpec, WatcherConfig, hook_search_path
from circus_sd.config.options import OptionValueError
from circus_sd.config.streams import StreamOptionError, parse_stream, stream_options
from circus_sd.config.watcher_keys import STREAMS, WatcherKey, parse_value


class WatcherOptionError(ValueError):
    """An option refused. `key` names it; `on_line` is false when the fault is the watcher's as
    a whole (the file's error then points at the section, not at the key's line)."""

    def __init__(self, key: str, message: str, *, on_line: bool = True) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.on_line = on_line


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something accepted but probably not what was meant: the file's loader warns."""

    key: str
    message: str
    on_line: bool = True


@dataclasses.dataclass(frozen=True)
class OptionChanges:
    """Parsed options: new field values, and what is merged with the watcher when applied."""

    # field name -> parsed value, for options declared with an Option.
    fields: Mapping[str, Any]
    # RLIMIT_* number -> (soft, hard).
    rlimits: Mapping[int, tuple[int, int]]
    # "stdout_stream"/"stderr_stream" -> sub-key -> raw text (merged with the current stream).
    streams: Mapping[str, Mapping[str, str]]
    # hook name -> spec, or None to remove it.
    hooks: Mapping[str, HookSpec | None]
    env: Mapping[str, str] | None = None


def parse_changes(values: Iterable[tuple[WatcherKey, str | Mapping[str, Any]]]) -> OptionChanges:
    """Parse resolved keys' values (text; an object of NAME: value for `env`)."""
    fields: dict[str, Any] = {}
    rlimits: dict[int, tuple[int, int]] = {}
    streams: dict[str, dict[str, str]] = {}
    hooks: dict[str, HookSpec | None] = {}
    env: dict[str, str] | None = None
    for key, value in values:
        if key.field == "env":
            if not isinstance(value, Mapping):
                raise WatcherOptionError(key.name, "expected an object of NAME: value")
            env = {str(k): str(v) for k, v in value.items()}
            continue
        if not isinstance(value, str):
            raise WatcherOptionError(key.name, "expected a text value")
        if key.field in STREAMS:
            streams.setdefault(key.field, {})[key.sub] = value
            continue
        try:
            parsed = parse_value(key, value)
        except OptionValueError as exc:
            raise WatcherOptionError(key.name, str(exc)) from None
        if key.field == "rlimits":
            number, soft, hard = parsed
            rlimits[number] = (soft, hard)
        elif key.field == "hooks":
            hooks[key.sub] = parsed
        else:
            fields[key.field] = parsed
    return OptionChanges(fields, rlimits, streams, hooks, env)


def apply_changes(
    config: WatcherConfig,
    changes: OptionChanges,
    config_dir: str | None,
    hook_dirs: Sequence[str] = (),
    *,
    defer_hook_imports: bool = False,
) -> tuple[WatcherConfig, list[Notice]]:
    """`config` with `changes` applied, and what the streams' options warn about. Hooks are
    imported now (from `hook_search_path(config_dir, ...)`, then `hook_dirs`: the directories
    of the files their lines are in, for included files) so that a typo fails here; with
    `defer_hook_imports` (the config file) one that cannot be imported yet is only a notice,
    as a hook is imported again when it is due.

    Not yet cross-checked (see watcher_checks): a new `uid` without a `gid` clears the gid, for
    the checks to give it the new user's primary group."""
    updates: dict[str, Any] = dict(changes.fields)
    notices: list[Notice] = []
    if changes.rlimits:
        # Kept in the order they were first given: an unrelated change leaves them equal.
        rlimits = {number: (soft, hard) for number, soft, hard in config.rlimits}
        rlimits.update(changes.rlimits)
        updates["rlimits"] = tuple((n, s, h) for n, (s, h) in rlimits.items())
    for prefix, raw in changes.streams.items():
        current = getattr(config, prefix)
        merged = {**(stream_options(current) if current is not None else {}), **raw}
        try:
            updates[prefix], warnings = parse_stream(merged)
        except StreamOptionError as exc:
            key = f"{prefix}.{exc.key}" if exc.key else prefix
            raise WatcherOptionError(key, exc.message) from None
        notices += [Notice(f"{prefix}.{sub}", message) for sub, message in warnings]
    if changes.env is not None:
        updates["env"] = MappingProxyType(dict(changes.env))
    if "uid" in updates:
        updates["user_name"] = None  # a uid given now replaces one still to be looked up
        if "gid" not in updates:
            updates["gid"] = None
    if "gid" in updates:
        updates["group_name"] = None
    changed = dataclasses.replace(config, **updates)
    if changes.hooks:
        search = [*hook_search_path(config_dir, changed), *hook_dirs]
        hooks, failures = _hooks(changed, changes.hooks, search)
        if failures and not defer_hook_imports:
            raise failures[0]
        notices += [
            Notice(f.key, f"{f.message}: imported again when it is due") for f in failures
        ]
        changed = dataclasses.replace(changed, hooks=hooks)
    return changed, notices


def _hooks(
    config: WatcherConfig, changes: Mapping[str, HookSpec | None], search: Sequence[str]
) -> tuple[Mapping[str, HookSpec], list[WatcherOptionError]]:
    """The hooks with `changes` applied, and the import failures of the new ones."""
    hooks = dict(config.hooks)
    failures: list[WatcherOptionError] = []
    for name, spec in changes.items():
        if spec is None:
            hooks.pop(name, None)  # Circus has no way to remove one; an empty value does here
            continue
        try:
            spec.resolve(search)
        except HookImportError as exc:
            failures.append(WatcherOptionError(f"hooks.{name}", str(exc)))
        hooks[name] = spec
    return MappingProxyType(hooks), failures
