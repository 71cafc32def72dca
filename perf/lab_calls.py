#!/usr/bin/env python3
"""`pcscf lab --calls` with the worker's CPU share sampled: the calls comparison's pcscf-over-
AF_XDP side (perf/run, RESULTS.md §1b).

Runs `PCSCF lab --ues 100 --calls RATE x SECONDS --call-rate RATE --messages 0` on every CPU but
CPU 0 (where the lab pins pcscf's one worker: the simulators then cannot preempt it), its
stdout to OUT (its stderr to ours), and while it runs reads the `worker-0` thread of the `pcscf run` it
starts (its child) every 50 ms: /proc/PID/task/TID/schedstat gives the thread's time on a CPU
and its time runnable but waiting for one. The worker busy-polls, so it is always runnable: the
first over the sum is the share of wall time it really had its core, which perf/report.py
applies to pcscf's own busy time (wall time inside batches that had packets) as an estimate of
its CPU per call. Appends one line to OUT: `sampler: worker_on_cpu_s=... worker_wait_s=...`.
Exits with the lab's status.

  sudo perf/lab_calls.py target/release/pcscf 1000 5 /tmp/lab-calls-1000.txt
"""
import glob
import os
import subprocess
import sys
import time


def worker_thread(parent):
    """(pid, tid) of `worker-0` in a child process of `parent`, or None."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(stat).read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2:].split()[1]) != parent:
            continue
        pid = stat.split("/")[2]
        for comm in glob.glob(f"/proc/{pid}/task/*/comm"):
            try:
                if open(comm).read().strip() == "worker-0":
                    return int(pid), int(comm.split("/")[4])
            except OSError:
                pass
    return None


def schedstat(pid, tid):
    try:
        f = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
        return int(f[0]), int(f[1])
    except (OSError, ValueError, IndexError):
        return None


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    exe, rate, secs, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    calls = max(1, int(rate * secs))
    with open(out, "w") as f:
        # The lab pins pcscf's worker to CPU 0; everything else (the simulators, pcscf's other
        # threads) is kept off it, so that the worker's busy time is its own work, not the
        # simulators' it was preempted for (they wake on what it sends).
        others = set(range(1, os.cpu_count() or 1))
        lab = subprocess.Popen([exe, "lab", "--ues", "100", "--calls", str(calls), "--call-rate",
                                str(rate), "--messages", "0"], stdout=f,
                               preexec_fn=(lambda: os.sched_setaffinity(0, others)) if others else None)
        first = last = None
        w = None
        while lab.poll() is None:
            if w is None:
                w = worker_thread(lab.pid)
            if w:
                s = schedstat(*w)
                if s:
                    first = first or s
                    last = s
            time.sleep(0.05)
    with open(out, "a") as f:
        if first and last:
            on, wait = (last[0] - first[0]) / 1e9, (last[1] - first[1]) / 1e9
            f.write(f"sampler: worker_on_cpu_s={on:.3f} worker_wait_s={wait:.3f}\n")
        else:
            f.write("sampler: worker thread not found\n")
    sys.exit(lab.returncode)


if __name__ == "__main__":
    main()
