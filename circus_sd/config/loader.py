"""Load a Circus INI file and its includes into a typed Config, with warnings to log."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import socket as socket_module
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from circus_sd.config.env_file import EnvFileError, EnvFileRef, env_file_paths, read_env_file
from circus_sd.config.ini import IniSection, IniSyntaxError, parse_ini
from circus_sd.config.model import (
    HOOK_NAMES,
    ArbiterConfig,
    Config,
    Location,
    SocketConfig,
    WatcherConfig,
)
from circus_sd.config.options import (
    OptionValueError,
    boolean,
    integer,
    options_of,
    unknown_account,
)
from circus_sd.config.placeholders import substitute_env
from circus_sd.config.watcher_changes import (
    Notice,
    WatcherOptionError,
    apply_changes,
    parse_changes,
)
from circus_sd.config.watcher_checks import WatcherContext, cross_check
from circus_sd.config.watcher_keys import OPTIONS as _WATCHER_OPTIONS
from circus_sd.config.watcher_keys import WatcherKey, resolve_key
from circus_sd.process_bound import process_bound
from circus_sd.start_order import DependencyError, start_order


def _describe(
    path: str | None, line: int | None, section: str | None, option: str | None, message: str
) -> str:
    parts: list[str] = []
    if path is not None:
        parts.append(f"{path}:{line}:" if line is not None else f"{path}:")
    if section is not None:
        parts.append(f"[{section}]")
    if option is not None:
        parts.append(f"{option}:")
    parts.append(message)
    return " ".join(parts)


class ConfigError(Exception):
    """A configuration the arbiter cannot run; str() is `file:line: [section] option: message`."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        section: str | None = None,
        option: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.section = section
        self.option = option

    @classmethod
    def at(
        cls,
        location: Location | None,
        message: str,
        section: str | None = None,
        option: str | None = None,
    ) -> ConfigError:
        return cls(
            message,
            path=location.path if location else None,
            line=location.line if location else None,
            section=section,
            option=option,
        )

    def __str__(self) -> str:
        return _describe(self.path, self.line, self.section, self.option, self.message)


@dataclasses.dataclass(frozen=True)
class ConfigWarning:
    """Something accepted but probably not what the author meant; the caller logs it."""

    location: Location | None
    section: str | None
    option: str | None
    message: str

    def __str__(self) -> str:
        path = self.location.path if self.location else None
        line = self.location.line if self.location else None
        return _describe(path, line, self.section, self.option, self.message)


def load_config(
    path: str, environ: Mapping[str, str] | None = None
) -> tuple[Config, list[ConfigWarning]]:
    """Read `path` (and what it includes) into a Config; raise ConfigError on any mistake."""
    loader = _Loader(os.environ if environ is None else environ, os.geteuid())
    config = loader.load(path)
    return config, loader.warnings


# -- what the loader knows about Circus's keys ---------------------------------------------------

_ARBITER_OPTIONS = options_of(ArbiterConfig)
_SOCKET_OPTIONS = options_of(SocketConfig)

_WATCHER_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")

# Circus watcher keys that later versions will implement: accepted, stored in `extra`, warned.
_NOT_YET = (
    "on_demand", "virtualenv_py_ver",
)

_STATS_ADVICE = "use `circusctl stats` or the Prometheus exporter plugin"
_HTTPD_ADVICE = "circus-web is not supported; use circusctl"
_CIRCUS_NO_EFFECT: Mapping[str, str] = {
    "check_delay": "supervision is event-driven; there is no polling tick",
    "statsd": _STATS_ADVICE,
    "stats_endpoint": _STATS_ADVICE,
    "statsd_close_outputs": _STATS_ADVICE,
    "httpd": _HTTPD_ADVICE,
    "httpd_host": _HTTPD_ADVICE,
    "httpd_port": _HTTPD_ADVICE,
    "httpd_close_outputs": _HTTPD_ADVICE,
    "multicast_endpoint": "discovery is off by design; give circusctl the endpoint",
    "stream_backend": "output is read by the event loop",
    "debug_gc": "only used by Circus's stats",
    "fqdn_prefix": "only used by Circus's stats",
}

# Flapping plugin key -> the watcher option it gives a default to.
_FLAPPING_KEYS: Mapping[str, str] = {
    "attempts": "flapping.attempts",
    "window": "flapping.window",
    "retry_in": "flapping.retry_in",
    "max_retry": "flapping.max_retry",
}
_PLUGIN_KEYS = frozenset({"use", "active", "priority"})

# In [watcher:…] and [env…] sections alike (where it is the one key that is no variable).
_ENV_FILE = "env_file"


def _is_env_section(name: str) -> bool:
    return name == "env" or name.startswith("env:")


# -- the raw sections, with locations ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Value:
    text: str
    location: Location
    key: str = ""


@dataclasses.dataclass
class _Section:
    name: str
    location: Location
    # Normalised key -> value in file order (lower-case keys, except in env sections).
    values: dict[str, _Value]


def _sections_of(
    path: str, parsed: list[IniSection]
) -> tuple[dict[str, _Section], list[tuple[str, _Value]]]:
    """One file's sections by name, keys normalised, and the values set again, which Circus
    ignores: a repeated section adds to the first, a repeated key keeps its first value."""
    own: dict[str, _Section] = {}
    ignored: list[tuple[str, _Value]] = []
    for raw in parsed:
        section = own.setdefault(raw.name, _Section(raw.name, Location(path, raw.line), {}))
        keep_case = _is_env_section(raw.name)  # environment variable names are case-sensitive
        for entry in raw.entries:
            key = entry.key if keep_case else entry.key.lower()
            value = _Value(entry.value, Location(path, entry.line), key)
            if key in section.values:
                ignored.append((raw.name, value))
            else:
                section.values[key] = value
    return own, ignored


@dataclasses.dataclass(frozen=True)
class _Visit:
    """A file on the include stack: its real path (for loops) and the path we show."""

    real: str
    shown: str


class _Loader:
    def __init__(self, environ: Mapping[str, str], euid: int) -> None:
        self.environ = environ
        self.euid = euid
        self.warnings: list[ConfigWarning] = []
        self.sections: list[_Section] = []  # every section of every file, includes in place
        self.read_from: dict[str, str] = {}  # real path -> path shown, of every file read
        self.socket_names: list[str] = []  # [socket:NAME] sections, for the watchers' checks
        self.config_dir: str | None = None  # the main file's, where hooks are imported from too
        self.env_cache: dict[str, dict[str, str]] = {}  # [env…] section name -> its variables

    def warn(
        self,
        location: Location | None,
        message: str,
        section: str | None = None,
        option: str | None = None,
    ) -> None:
        self.warnings.append(ConfigWarning(location, section, option, message))

    def load(self, path: str) -> Config:
        main = os.path.abspath(path)
        self.config_dir = os.path.dirname(main)
        self.read_file(main, ())
        sections = self.merge()
        global_env = self.raw_env(sections.get("env"))
        arbiter_lookup = {**self.environ, **global_env}
        arbiter = self.arbiter(sections.get("circus"), arbiter_lookup)
        plugins = [s for s in sections.values() if s.name.startswith("plugin:")]
        flapping, plugin_watchers = self.plugins(plugins, arbiter_lookup, arbiter)
        sockets = self.sockets(list(sections.values()), arbiter_lookup)
        self.socket_names = [s.name for s in sockets]
        watchers = self.watchers(list(sections.values()), global_env, flapping)
        watchers += plugin_watchers
        self.check_process_bound(watchers, sections, arbiter)
        self.warn_ignored(list(sections.values()))
        try:
            start_order(watchers)
        except DependencyError as exc:
            raise ConfigError.at(
                exc.watcher.location, str(exc).removeprefix("after: "),
                f"watcher:{exc.watcher.name}", "after",
            ) from None
        return Config(path=main, arbiter=arbiter, watchers=tuple(watchers), sockets=tuple(sockets))

    def watchers(
        self, sections: list[_Section], global_env: dict[str, str], flapping: Mapping[str, Any]
    ) -> list[WatcherConfig]:
        """Every [watcher:…] in file order, env from [env] then matching [env:…] in file order."""
        env_sections = [s for s in sections if s.name.startswith("env:")]
        matched: set[str] = set()
        watchers: list[WatcherConfig] = []
        by_folded_name: dict[str, WatcherConfig] = {}
        for section in sections:
            if not section.name.startswith("watcher:"):
                continue
            env = dict(global_env)
            for env_section in env_sections:
                if self.env_applies(env_section, section):
                    env.update(self.raw_env(env_section))
                    matched.add(env_section.name)
            watcher = self.watcher(section, env, flapping)
            self.check_name_clash(watcher, by_folded_name)
            by_folded_name[watcher.name.lower()] = watcher
            context = WatcherContext(
                self.socket_names,
                self.environ,
                self.euid == 0,
                self.config_dir,
                defer_machine_state=True,
            )
            try:
                watcher, notices = cross_check(watcher, context)
            except WatcherOptionError as error:
                raise self.option_error(section, error) from None
            self.notify(section, notices)
            watchers.append(watcher)
        for env_section in env_sections:
            if env_section.name not in matched:
                self.warn(env_section.location, "matches no watcher", env_section.name)
        return watchers

    def check_process_bound(
        self,
        watchers: list[WatcherConfig],
        sections: Mapping[str, _Section],
        arbiter: ArbiterConfig,
    ) -> None:
        """Refuse, at the `numprocesses` that crosses it, more processes in all than
        `max_processes` (by default what this machine's limits allow)."""
        bound = process_bound(arbiter.max_processes)
        total = 0
        for watcher in watchers:
            count = watcher.target_processes
            total += count
            if total <= bound.limit:
                continue
            where = watcher.location
            for section in sections.values():
                if section.name.startswith("watcher:") and (
                    section.name[len("watcher:") :].strip() == watcher.name
                ):
                    value = section.values.get("numprocesses")
                    where = value.location if value is not None else section.location
            if total == count:
                message = f"{count} is above {bound}"
            else:
                message = f"{count} makes {total} processes with the watchers before, above {bound}"
            raise ConfigError.at(where, message, f"watcher:{watcher.name}", "numprocesses")

    def warn_ignored(self, sections: list[_Section]) -> None:
        for section in sections:
            if section.name == "DEFAULT":
                message = "not inherited by other sections here; this section has no effect"
            elif section.name in ("circus", "env") or section.name.startswith(
                ("env:", "watcher:", "plugin:", "socket:")
            ):
                continue
            else:
                message = "unknown section (ignored)"
            self.warn(section.location, message, section.name)

    # -- reading files and includes --------------------------------------------------------------

    def read_file(self, path: str, stack: tuple[_Visit, ...]) -> None:
        visit = _Visit(os.path.realpath(path), path)
        try:
            with open(path, encoding="utf-8-sig") as stream:
                text = stream.read()
        except FileNotFoundError:
            raise ConfigError("configuration file not found", path=path) from None
        except UnicodeDecodeError as error:
            line = error.object[: error.start].count(b"\n") + 1
            raise ConfigError(
                f"not valid UTF-8 text ({error.reason})", path=path, line=line
            ) from None
        except OSError as error:
            raise ConfigError(f"cannot read: {error.strerror}", path=path) from None
        nul = text.find("\0")
        if nul >= 0:
            # No value may hold one (paths, names, the environment): refused here, once.
            line = text.count("\n", 0, nul) + 1
            raise ConfigError("a NUL byte in the text (a binary file?)", path=path, line=line)
        try:
            parsed = parse_ini(text)
        except IniSyntaxError as error:
            raise ConfigError(error.message, path=path, line=error.line) from None
        self.read_from[visit.real] = path

        own, ignored = _sections_of(path, parsed)
        self.sections.extend(own.values())
        for section_name, value in ignored:
            self.warn_set_again(own[section_name], value)

        circus = own.get("circus")
        if circus is None:
            return
        # Consumed here, per file, so relative patterns follow the file that names them.
        include = circus.values.pop("include", None)
        include_dir = circus.values.pop("include_dir", None)
        for candidate, key, origin in self.included_files(visit, include, include_dir):
            self.include(candidate, key, origin, (*stack, visit))

    def included_files(
        self, visit: _Visit, include: _Value | None, include_dir: _Value | None
    ) -> list[tuple[str, str, _Value]]:
        """(file, key, value naming it) for every file the include keys match, in order."""
        directory = os.path.dirname(visit.shown)
        found: list[tuple[str, str, _Value]] = []
        requests: list[tuple[str, str, _Value]] = []  # (glob, key, value naming it)
        if include is not None:
            for pattern in self.substitute(include, self.environ, "circus", "include").split():
                requests.append((os.path.join(directory, pattern), "include", include))
        if include_dir is not None:
            text = self.substitute(include_dir, self.environ, "circus", "include_dir")
            for folder in text.split():
                requests.append(
                    (os.path.join(directory, folder, "*.ini"), "include_dir", include_dir)
                )
        for pattern, key, origin in requests:
            wildcard = any(char in pattern for char in "*?[")
            matches = [
                match
                for match in sorted(glob.glob(pattern))
                # A wildcard that also matches the including file is not a loop.
                if os.path.isfile(match)
                and not (wildcard and os.path.realpath(match) == visit.real)
            ]
            # An existing but empty drop-in directory is normal (the Debian package ships one).
            empty_dir = key == "include_dir" and os.path.isdir(os.path.dirname(pattern))
            if not matches and not empty_dir:
                self.warn(origin.location, f"{pattern!r} matches no file", "circus", key)
            found.extend((match, key, origin) for match in matches)
        return found

    def include(self, path: str, key: str, origin: _Value, stack: tuple[_Visit, ...]) -> None:
        real = os.path.realpath(path)
        if any(visit.real == real for visit in stack):
            chain = " -> ".join([*(visit.shown for visit in stack), path])
            raise ConfigError.at(origin.location, f"include loop: {chain}", "circus", key)
        if real in self.read_from:
            self.warn(
                origin.location,
                f"{path!r} is already included (as {self.read_from[real]!r}); read once",
                "circus",
                key,
            )
            return
        self.read_file(path, stack)

    def merge(self) -> dict[str, _Section]:
        """Sections of all files by name, as Circus merges them: the main file first, then its
        includes in order; a section named again adds its keys, a key set again is ignored.
        A watcher or plugin section with no keys is skipped, as Circus skips it (a socket
        section with none binds with the defaults, as it always has here)."""
        merged: dict[str, _Section] = {}
        for section in self.sections:
            first = merged.get(section.name)
            if first is None:
                merged[section.name] = dataclasses.replace(section, values=dict(section.values))
                continue
            for key, value in section.values.items():
                if key in first.values:
                    self.warn_set_again(first, value)
                else:
                    first.values[key] = value
        for name, section in list(merged.items()):
            if not section.values and name.startswith(("watcher:", "plugin:")):
                del merged[name]
                self.warn(section.location, "has no options: skipped, as Circus does", name)
        return merged

    def warn_set_again(self, first: _Section, value: _Value) -> None:
        self.warn(
            value.location,
            f"set again: ignored, the first value (at {first.values[value.key].location}) is "
            "used, as in Circus",
            first.name,
            value.key,
        )

    # -- values ----------------------------------------------------------------------------------

    def substitute(self, value: _Value, env: Mapping[str, str], section: str, key: str) -> str:
        text, unset = substitute_env(value.text, env)
        for placeholder in unset:
            self.warn(
                value.location,
                f"{placeholder} names no variable of the arbiter's environment or [env]: "
                "kept as written, as in Circus",
                section,
                key,
            )
        return text

    def parse(
        self, parse: Callable[[str], Any], text: str, value: _Value, section: str, key: str
    ) -> Any:
        try:
            return parse(text)
        except OptionValueError as error:
            raise ConfigError.at(value.location, str(error), section, key) from None

    def raw_env(self, section: _Section | None) -> dict[str, str]:
        """An [env…] section's variables: its keys, then its `env_file` files' over them (as
        systemd's EnvironmentFile= over Environment=). Read once per load, however many
        watchers the section matches."""
        # Left unsubstituted: the spawn path resolves `$(circus.…)` in env values per process.
        if section is None:
            return {}
        cached = self.env_cache.get(section.name)
        if cached is not None:
            return cached
        env = {key: value.text for key, value in section.values.items() if key != _ENV_FILE}
        files = section.values.get(_ENV_FILE)
        if files is not None:
            env.update(self.env_files(files, self.environ, section.name))
        self.env_cache[section.name] = env
        return env

    def env_files(self, value: _Value, lookup: Mapping[str, str], section: str) -> dict[str, str]:
        """The variables of the files an `env_file` value names, later files over earlier
        ones; a relative path is taken from the directory of the file the value is in."""
        text = self.substitute(value, lookup, section, _ENV_FILE)
        words = self.parse(env_file_paths, text, value, section, _ENV_FILE)
        base = os.path.dirname(value.location.path) or self.config_dir
        env: dict[str, str] = {}
        for word in words:
            try:
                env.update(read_env_file(EnvFileRef.parse(word), base))
            except EnvFileError as error:
                raise ConfigError.at(value.location, str(error), section, _ENV_FILE) from None
        return env

    @staticmethod
    def env_applies(env_section: _Section, watcher_section: _Section) -> bool:
        patterns = [p.strip() for p in env_section.name[len("env:") :].split(",") if p.strip()]
        name = watcher_section.name[len("watcher:") :].strip()
        return any(fnmatchcase(name, pattern) for pattern in patterns)

    # -- [circus] --------------------------------------------------------------------------------

    def arbiter(self, section: _Section | None, lookup: Mapping[str, str]) -> ArbiterConfig:
        if section is None:
            return ArbiterConfig()
        fields: dict[str, Any] = {}
        for key, value in section.values.items():
            if key in _ARBITER_OPTIONS:
                field, declared = _ARBITER_OPTIONS[key]
                text = self.substitute(value, lookup, "circus", key)
                fields[field] = self.parse(declared.parse, text, value, "circus", key)
            elif key in _CIRCUS_NO_EFFECT:
                self.warn(
                    value.location, f"has no effect; {_CIRCUS_NO_EFFECT[key]}", "circus", key
                )
            else:
                self.warn(value.location, "unknown option (ignored)", "circus", key)
        if fields.get("debug"):
            if fields.get("loglevel", "debug") != "debug":
                self.warn(
                    section.values["debug"].location,
                    f"overrides loglevel = {fields['loglevel']}; the log level is debug",
                    "circus",
                    "debug",
                )
            fields["loglevel"] = "debug"
        return ArbiterConfig(**fields)

    # -- [plugin:…] ------------------------------------------------------------------------------

    def plugins(
        self, sections: list[_Section], lookup: Mapping[str, str], arbiter: ArbiterConfig
    ) -> tuple[dict[str, Any], list[WatcherConfig]]:
        """(flapping defaults, a watcher per active plugin): Circus's flapping plugin gives the
        watchers' `flapping.*` defaults; any other plugin runs as the watcher `plugin:NAME`."""
        if not sections:
            return {}, []
        # Imported only when needed: the plugins' option declarations import more.
        from circus_sd.config import plugin_catalog as catalog
        from circus_sd.config.plugin_watchers import DEFAULT_PRIORITY, plugin_watcher

        defaults: dict[str, Any] = {}
        chosen: _Section | None = None
        watchers: list[WatcherConfig] = []
        for section in sections:
            if not self.option_value(section, "active", boolean, True, lookup):
                continue
            use = section.values.get("use")
            if use is None:
                raise ConfigError.at(
                    section.location, "missing: the plugin to run", section.name, "use"
                )
            use_text = self.substitute(use, lookup, section.name, "use").strip()
            if use_text == catalog.FLAPPING:
                if chosen is not None:
                    self.warn(
                        section.location,
                        f"another flapping plugin section ([{chosen.name}] at {chosen.location}) "
                        "already gives the defaults; this one has no effect",
                        section.name,
                    )
                    continue
                chosen = section
                defaults = self.flapping_defaults(section, lookup)
                continue
            try:
                path = catalog.resolve(use_text)
            except catalog.NoCounterpart as error:
                self.warn(use.location, f"{error}; this section has no effect", section.name, "use")
                continue
            except ValueError as error:
                raise ConfigError.at(use.location, str(error), section.name, "use") from None
            name = section.name[len("plugin:") :].strip()
            if not _WATCHER_NAME.match(name):
                raise ConfigError.at(
                    section.location,
                    f"invalid plugin name {name!r}: use letters, digits, '_', '.' and '-'",
                    section.name,
                )
            options = {
                key: self.substitute(value, lookup, section.name, key)
                for key, value in section.values.items()
                if key not in _PLUGIN_KEYS
            }
            if catalog.is_shipped(path):
                self.check_plugin_options(section, catalog.load_class(path), options)
            priority = self.option_value(section, "priority", integer(), DEFAULT_PRIORITY, lookup)
            watchers.append(
                plugin_watcher(name, path, options, arbiter, priority, section.location)
            )
        return defaults, watchers

    def option_value(
        self,
        section: _Section,
        key: str,
        parse: Callable[[str], Any],
        default: Any,
        lookup: Mapping[str, str],
    ) -> Any:
        value = section.values.get(key)
        if value is None:
            return default
        text = self.substitute(value, lookup, section.name, key)
        return self.parse(parse, text, value, section.name, key)

    def flapping_defaults(self, section: _Section, lookup: Mapping[str, str]) -> dict[str, Any]:
        """Watcher field -> default, from Circus's `circus.plugins.flapping.Flapping` section."""
        defaults: dict[str, Any] = {}
        for key, value in section.values.items():
            if key in _FLAPPING_KEYS:
                field, declared = _WATCHER_OPTIONS[_FLAPPING_KEYS[key]]
                text = self.substitute(value, lookup, section.name, key)
                defaults[field] = self.parse(declared.parse, text, value, section.name, key)
            elif key not in _PLUGIN_KEYS:
                self.warn(value.location, "unknown option (ignored)", section.name, key)
        return defaults

    def check_plugin_options(
        self, section: _Section, plugin_class: type, options: Mapping[str, str]
    ) -> None:
        """A shipped plugin's options, checked here so that a mistake stops the start-up."""
        from circus_sd.config.plugin_options import PluginOptionError, parse_options

        declared = getattr(plugin_class, "options_class", None)
        if declared is None:
            return
        try:
            _parsed, unknown = parse_options(declared, options)
        except PluginOptionError as error:
            value = section.values.get(error.key) if error.key else None
            raise ConfigError.at(
                value.location if value else section.location,
                error.message,
                section.name,
                error.key,
            ) from None
        for key in unknown:
            self.warn(section.values[key].location, "unknown option (ignored)", section.name, key)

    # -- [watcher:…] -----------------------------------------------------------------------------

    def watcher(
        self, section: _Section, env: dict[str, str], flapping: Mapping[str, Any]
    ) -> WatcherConfig:
        name = section.name[len("watcher:") :].strip()
        if not _WATCHER_NAME.match(name):
            raise ConfigError.at(
                section.location,
                f"invalid watcher name {name!r}: use letters, digits, '_', '.' and '-'",
                section.name,
            )
        files = section.values.get(_ENV_FILE)
        if files is not None:
            # The watcher's own files, over what the [env…] sections gave it.
            env = {**env, **self.env_files(files, {**self.environ, **env}, section.name)}
        lookup = {**self.environ, **env}
        extra: dict[str, str] = {}
        values: list[tuple[WatcherKey, str]] = []
        # uid/gid names with no account yet, looked up at each spawn.
        later: dict[str, str] = {}
        for key, value in section.values.items():
            declared = _WATCHER_OPTIONS.get(key)
            if declared is not None and declared[1].spawn_time:
                text = value.text  # filled per process at each spawn
            else:
                text = self.substitute(value, lookup, section.name, key)
            resolved = resolve_key(key)
            # In the file, the environment comes from [env] sections: `env` is no key of it.
            if resolved is None or resolved.field == "env":
                extra[key] = text
                if any(fnmatchcase(key, pattern) for pattern in _NOT_YET):
                    message = "not supported yet in this version; it has no effect"
                else:
                    message = "unknown option (ignored; kept for plugins)"
                self.warn(value.location, message, section.name, key)
            elif resolved.field in ("uid", "gid") and (
                name_later := unknown_account(resolved.field, text)
            ):
                what = "user" if resolved.field == "uid" else "group"
                later[resolved.field] = name_later
                self.warn(
                    value.location,
                    f"no {what} {name_later!r} exists (yet): looked up again at each spawn; "
                    "the processes fail to start until it exists",
                    section.name,
                    key,
                )
            elif resolved.field == "hooks" and resolved.sub not in HOOK_NAMES:
                self.warn(
                    value.location,
                    f"unknown hook (ignored; hooks are {', '.join(HOOK_NAMES)})",
                    section.name,
                    key,
                )
            else:
                values.append((resolved, text))
        new = WatcherConfig(
            name=name,
            env=MappingProxyType(env),
            extra=MappingProxyType(extra),
            location=section.location,
            user_name=later.get("uid"),
            group_name=later.get("gid"),
        )
        try:
            changes = parse_changes(values)
            # The flapping plugin's defaults, under what the watcher says.
            changes = dataclasses.replace(changes, fields={**flapping, **changes.fields})
            # A hook next to the included file that names it is found, as the file's own.
            hook_dirs = sorted(
                {os.path.dirname(v.location.path) for k, v in section.values.items()
                 if k.startswith("hooks.") and v.location.path}
            )
            watcher, notices = apply_changes(
                new, changes, self.config_dir, hook_dirs, defer_hook_imports=True
            )
        except WatcherOptionError as error:
            raise self.option_error(section, error) from None
        self.notify(section, notices)
        return watcher

    def option_error(self, section: _Section, error: WatcherOptionError) -> ConfigError:
        """At the line of the option at fault, or at the section for the watcher as a whole."""
        value = section.values.get(error.key) if error.on_line else None
        location = value.location if value is not None else section.location
        return ConfigError.at(location, error.message, section.name, error.key)

    def notify(self, section: _Section, notices: list[Notice]) -> None:
        for notice in notices:
            value = section.values.get(notice.key) if notice.on_line else None
            location = value.location if value is not None else section.location
            self.warn(location, notice.message, section.name, notice.key)

    # -- [socket:…] ------------------------------------------------------------------------------

    def sockets(self, sections: list[_Section], lookup: Mapping[str, str]) -> list[SocketConfig]:
        """Every [socket:NAME] in file order."""
        found: list[SocketConfig] = []
        for section in sections:
            if not section.name.startswith("socket:"):
                continue
            name = section.name[len("socket:") :].strip()
            if not _WATCHER_NAME.match(name):
                raise ConfigError.at(
                    section.location,
                    f"invalid socket name {name!r}: use letters, digits, '_', '.' and '-'",
                    section.name,
                )
            fields: dict[str, Any] = {}
            for key, value in section.values.items():
                text = self.substitute(value, lookup, section.name, key)
                if key in _SOCKET_OPTIONS:
                    field, declared = _SOCKET_OPTIONS[key]
                    fields[field] = self.parse(declared.parse, text, value, section.name, key)
                else:
                    self.warn(value.location, "unknown option (ignored)", section.name, key)
            config = SocketConfig(name=name, location=section.location, **fields)
            self.check_socket(config, section)
            found.append(config)
        return found

    def check_socket(self, config: SocketConfig, section: _Section) -> None:
        values = section.values
        if config.path is not None:
            if config.family not in (None, socket_module.AF_UNIX):
                self.warn(
                    values["family"].location,
                    "ignored: `path` makes this an AF_UNIX socket",
                    section.name,
                    "family",
                )
            for key in ("host", "port", "so_reuseport", "interface"):
                if key in values:
                    self.warn(
                        values[key].location, "ignored for an AF_UNIX socket (`path`)",
                        section.name, key,
                    )
        elif config.family == socket_module.AF_UNIX:
            raise ConfigError.at(
                values["family"].location, "AF_UNIX needs a `path`", section.name, "family"
            )
        else:
            for key in ("umask", "replace"):
                if key in values:
                    self.warn(
                        values[key].location, "only used by AF_UNIX sockets (`path`)",
                        section.name, key,
                    )

    def check_name_clash(
        self, watcher: WatcherConfig, previous: Mapping[str, WatcherConfig]
    ) -> None:
        # Circus looks watchers up by lower-cased name, so `Web` and `web` would collide.
        # (A mapping by lower-cased name: a file of thousands of watchers stays linear.)
        other = previous.get(watcher.name.lower())
        if other is not None:
            raise ConfigError.at(
                watcher.location,
                f"watcher name clashes with [watcher:{other.name}] at {other.location} "
                "(names are compared case-insensitively)",
                f"watcher:{watcher.name}",
            )
