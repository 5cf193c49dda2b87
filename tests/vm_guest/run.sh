#!/bin/bash
# Runs INSIDE the test VM (tests/system/test_vm.py boots it): installs circus-sd from the wheel
# built from the checkout (/src, read-only) and the unit from packaging/systemd, then runs the
# checks that need a real kernel with cgroup controllers. Exit status = pytest's.
set -u
cd / || exit 90
pip install --quiet --no-deps --no-index --break-system-packages /src/.build/testbed/wheel/*.whl || exit 91
ln -sf /usr/local/bin/circus-sd /usr/bin/circus-sd
ln -sf /usr/local/bin/circusctl /usr/bin/circusctl
cp /src/packaging/systemd/circus-sd.service /etc/systemd/system/circus-sd.service
systemctl daemon-reload
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -rs -p no:cacheprovider -c /dev/null \
  --rootdir=/tmp /src/tests/vm_guest/limits.py
