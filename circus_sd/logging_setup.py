"""The arbiter's own log: stderr (journald-aware), a file, syslog, or a logging config file."""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import sys
import urllib.parse

from circus_sd.config.model import ArbiterConfig

# sd-daemon(3) prefixes: journald reads the priority from `<N>` at the start of a line.
_SD_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalPrefixFormatter(logging.Formatter):
    """No timestamp (journald adds one); the level as an sd-daemon `<N>` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SD_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to journald ($JOURNAL_STREAM is its dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def configure_logging(
    config: ArbiterConfig,
    level: str | None = None,
    output: str | None = None,
    loggerconfig: str | None = None,
) -> None:
    """Command-line values win over the [circus] section's, as in circusd."""
    loggerconfig = loggerconfig or config.loggerconfig
    if loggerconfig:
        _load_logging_config(loggerconfig)
        return
    handler = _handler_for(output or config.logoutput)
    if (
        isinstance(handler, logging.StreamHandler)
        and handler.stream is sys.stderr
        and stderr_is_journal()
    ):
        handler.setFormatter(JournalPrefixFormatter("%(levelname)s %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s circus-sd[%(process)d] %(levelname)s %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or config.loglevel).upper())


def _handler_for(output: str) -> logging.Handler:
    if output in ("-", "stderr"):
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    if output.startswith("syslog://"):
        url = urllib.parse.urlparse(output)
        facility = url.query or "user"
        address: str | tuple[str, int]
        if url.hostname:
            address = (url.hostname, url.port or logging.handlers.SYSLOG_UDP_PORT)
        else:
            address = url.path or "/dev/log"
        return logging.handlers.SysLogHandler(address=address, facility=facility)
    # WatchedFileHandler reopens the file after logrotate moved it.
    return logging.handlers.WatchedFileHandler(output)


def _load_logging_config(path: str) -> None:
    if path.endswith(".json"):
        with open(path) as f:
            logging.config.dictConfig(json.load(f))
    elif path.endswith((".yaml", ".yml")):
        raise ValueError(f"{path}: YAML logging configs are not supported; use INI or JSON")
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)
