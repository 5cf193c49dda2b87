"""A real systemd 252 as PID 1 (nspawn container) with circus-sd installed from a wheel."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE / "testbed"))

from tbcontainer import BUILD, SystemdContainer, available  # noqa: E402

WHEELS = BUILD / "wheel"
UNIT = ROOT / "packaging" / "systemd" / "circus-sd.service"


def vm_unavailable() -> str | None:
    """None if the VM tier can boot here, else why."""
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 missing (make testbed installs it)"
    if not (BUILD / "vm" / "root.img").exists():
        return f"no VM image in {BUILD / 'vm'} (make testbed builds it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    container_why = available()
    if container_why is None and not any(WHEELS.glob("*.whl")):
        container_why = f"no circus-sd wheel in {WHEELS} (make testbed builds it)"
    # CI sets CIRCUS_SD_REQUIRE_SYSTEM=1: a system test that cannot run is a failure there.
    required = os.environ.get("CIRCUS_SD_REQUIRE_SYSTEM") == "1"
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        why = vm_unavailable() if item.get_closest_marker("vm") else container_why
        if why is None:
            continue
        if required:
            item.stash[_CANNOT_RUN] = why
        else:
            item.add_marker(pytest.mark.skip(reason=f"no systemd test bed: {why}"))


_CANNOT_RUN = pytest.StashKey[str]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under CIRCUS_SD_REQUIRE_SYSTEM=1, a system test that cannot run fails (an xfail or a skip
    would let the run pass)."""
    why = item.stash.get(_CANNOT_RUN, None)
    if why is not None:
        pytest.fail(f"system test required (CIRCUS_SD_REQUIRE_SYSTEM=1) but cannot run: {why}",
                    pytrace=False)


class System:
    """The container, with helpers phrased as an operator would act."""

    def __init__(self, container: SystemdContainer) -> None:
        self.ct = container

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> str:
        result = self.ct.run("bash", "-c", "cd / && " + script, unit=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{script!r} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def systemctl(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        result = self.ct.run("systemctl", *args, unit=False, timeout=timeout)
        return result.returncode, result.stdout + result.stderr

    def show(self, prop: str) -> str:
        return self.ct.show("circus-sd.service", prop)

    def write(self, path: str, text: str) -> None:
        self.ct.run(
            "sh",
            "-c",
            f"mkdir -p $(dirname {path}) && cat > {path}",
            input=text,
            unit=False,
            check=True,
        )

    def configure(self, ini: str) -> None:
        self.write("/etc/circus-sd/circus.ini", ini)

    def dropin(self, text: str) -> None:
        self.write("/etc/systemd/system/circus-sd.service.d/test.conf", text)
        self.systemctl("daemon-reload")

    def records(self) -> list[list[str]]:
        text = self.sh("cat /run/recorder.log 2>/dev/null || true")
        return [line.split() for line in text.splitlines() if line.strip()]

    def pids_of(self, pattern: str) -> list[int]:
        """Pids of payload programs whose command line starts with `pattern` (anchored, so that
        the shell running pgrep, whose own command line holds the pattern, is not counted)."""
        out = self.sh(f"pgrep -f '^/usr/bin/python3 /opt/(payload|children)/{pattern}' || true")
        return [int(p) for p in out.split()]

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def journal(self, *matches: str) -> list[dict[str, str]]:
        return self.ct.journal(*matches)

    def reset(self) -> None:
        """Between tests: the service stopped and forgotten, records and drop-ins gone."""
        self.systemctl("stop", "circus-sd.service")
        self.systemctl("reset-failed", "circus-sd.service")
        self.sh("rm -rf /run/recorder.log /etc/systemd/system/circus-sd.service.d")
        self.systemctl("daemon-reload")


@pytest.fixture(scope="session")
def container() -> Iterator[SystemdContainer]:
    binds = [
        (str(WHEELS), "/opt/circus-sd/wheel", True),
        (str(HERE / "payload"), "/opt/payload", True),
        # The integration tests' child programs (notifier.py), shared rather than copied.
        (str(ROOT / "tests" / "integration" / "children"), "/opt/children", True),
    ]
    with SystemdContainer(binds=binds) as ct:
        install = ct.run(
            "sh",
            "-c",
            "cd / && pip install --quiet --no-deps --no-index --break-system-packages "
            "/opt/circus-sd/wheel/*.whl && ln -sf /usr/local/bin/circus-sd /usr/bin/circus-sd "
            "&& ln -sf /usr/local/bin/circusctl /usr/bin/circusctl",
            unit=False,
            timeout=120,
        )
        assert install.returncode == 0, install.stderr
        ct.run(
            "sh",
            "-c",
            "cat > /etc/systemd/system/circus-sd.service",
            input=UNIT.read_text(),
            unit=False,
            check=True,
        )
        ct.run("systemctl", "daemon-reload", unit=False, check=True)
        yield ct


@pytest.fixture
def system(container: SystemdContainer) -> Iterator[System]:
    system = System(container)
    system.reset()
    yield system
    system.reset()
    assert not system.pids_of("recorder.py"), "a supervised process survived the stop"
