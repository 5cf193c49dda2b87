#!/bin/sh
# A worker that ends at once, as its worker id says, for the exit-status tests.
# Run as `exits.sh OUTDIR WID SIGNUM...`: worker 1..256 exits with status WID - 1; worker
# 256 + k kills itself with the k-th SIGNUM. (OUTDIR only marks the process as the test's.)
wid=$2
shift 2
if [ "$wid" -le 256 ]; then
    exit $((wid - 1))
fi
shift $((wid - 257))
kill -"$1" $$
sleep 5
exit 255
