"""Fixtures of the integration tests: each test gets a `circus` harness that cleans up after it."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from arbiter_harness import Circus


@pytest.fixture
def circus(tmp_path: Path) -> Iterator[Circus]:
    """Starts arbiters for the test; afterwards stops them (SIGTERM, then SIGKILL after a
    deadline) and fails the test if it left a process behind or an arbiter did not exit 0."""
    harness = Circus(tmp_path)
    yield harness
    problems = harness.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach each arbiter's log to the report."""
    report = yield
    harness = getattr(item, "funcargs", {}).get("circus")
    if report.failed and isinstance(harness, Circus):
        for arbiter in harness.arbiters:
            report.sections.append((f"circus-sd pid {arbiter.pid} log", arbiter.log()))
    return report
