#!/usr/bin/env python3
"""Calls through Kamailio (calls.cfg: tm + record_route, one UDP worker) between two SIPps.

For each offered rate: a fresh network namespace with only its loopback up, Kamailio on
127.0.0.1:5060, the callee (SIPp, call_uas.xml) on 127.0.0.3:5060 as its next hop, the caller
(SIPp, call_uac.xml) on 127.0.0.2:5060 placing rate x seconds calls at that rate (INVITE with a
~900-byte SDP, 100, 180, 200, ACK, BYE, 200). Kamailio's CPU time is read from
/proc/PID/task/*/schedstat (ns, every Kamailio process: the UDP worker, tm's timers, the main
process) just before the caller starts and just after the callee is done: CPU per completed
call, and calls per CPU-second = calls/s per core. The SIPps' own CPU comes from wait4().

One line per rate on stdout, `result: key=value ...` (perf/report.py reads them). Logs and
SIPp's files in --work. Exits 1 when a run completes no call, when Kamailio dies, or with
--strict when any call fails. Needs root (namespaces), kamailio and sipp. The namespace and
every process it started are removed on exit.

  sudo perf/kamailio/calls.py --rates 1000,2000 --seconds 5 --work /tmp/kamcalls
"""
import argparse
import csv
import glob
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KAM, UAC, UAS = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def children(pid):
    """pid and its descendants (by /proc/*/stat's ppid)."""
    parent = {}
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(d).read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        parent[int(d.split("/")[2])] = int(rest[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu_ns(pids):
    """{pid: CPU ns} over each process's threads (schedstat's first field)."""
    out = {}
    for p in pids:
        t = 0
        for f in glob.glob(f"/proc/{p}/task/*/schedstat"):
            try:
                t += int(open(f).read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        out[p] = t
    return out


def ticks(pids):
    """(user, system) CPU seconds over `pids` from /proc/PID/stat (clock ticks)."""
    hz = os.sysconf("SC_CLK_TCK")
    u = k = 0
    for p in pids:
        try:
            s = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        u, k = u + int(f[11]), k + int(f[12])
    return u / hz, k / hz


def wait_rusage(p, timeout):
    """Waits for Popen `p` (killing it after `timeout` s); (exit code, CPU s) from wait4()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return None, ru.ru_utime + ru.ru_stime


def sipp_stats(path):
    """The last row of SIPp's -trace_stat CSV as a dict."""
    try:
        rows = list(csv.reader(open(path), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def rtd_ms(v):
    """SIPp's 'HH:MM:SS:mmmuuu' response time → ms."""
    try:
        h, m, s, f = v.split(":")
        return (int(h) * 3600 + int(m) * 60 + int(s)) * 1e3 + int(f) / 1e3
    except (ValueError, AttributeError):
        return -1.0


def one_rate(a, ns, rate, work):
    calls = max(1, int(rate * a.seconds))
    tag = f"r{rate}"
    sipp_common = ["-nostdin", "-trace_err", "-watchdog_minor_maxtriggers", "1000000",
                   "-watchdog_major_maxtriggers", "1000000", "-buff_size", "4194304"]
    kam_log = open(os.path.join(work, f"kamailio-{tag}.log"), "w")
    # tm keeps each transaction wt_timer (5 s) after its final reply: ~7 KB each with
    # MAX_BRANCHES=1, two per call (INVITE, BYE)
    shm = max(256, int(rate * 2 * 7 * 7 / 1000) + 128)
    kam = subprocess.Popen(
        ["ip", "netns", "exec", ns, "kamailio", "-f", os.path.join(HERE, "calls.cfg"), "-DD", "-E",
         "-n", "1", "-x", "tlsf", "-m", str(shm), "-b", "4194304", "-Y", os.path.join(work, "run"),
         "-A", f"LISTEN=udp:{KAM}:5060", "-A", f'NEXT_HOP_IP="{UAS}"', "-A", "NEXT_HOP_PORT=5060",
         "-A", "MAX_BRANCHES=1"],
        stdout=kam_log, stderr=subprocess.STDOUT)
    procs = [kam]
    try:
        time.sleep(1.0)
        if kam.poll() is not None:
            raise RuntimeError(f"kamailio exited at start (see {kam_log.name})")
        uas = subprocess.Popen(
            ["ip", "netns", "exec", ns, "sipp", "-sf", os.path.join(HERE, "call_uas.xml"),
             "-i", UAS, "-p", "5060", "-m", str(calls)] + sipp_common,
            cwd=work, stdout=open(os.path.join(work, f"uas-{tag}.out"), "w"), stderr=subprocess.STDOUT)
        procs.append(uas)
        time.sleep(0.3)
        kpids = children(kam.pid)
        c0, k0 = cpu_ns(kpids), ticks(kpids)
        t0 = time.monotonic()
        stf = os.path.join(work, f"uac-{tag}.csv")
        uac = subprocess.Popen(
            ["ip", "netns", "exec", ns, "sipp", f"{KAM}:5060", "-sf", os.path.join(HERE, "call_uac.xml"),
             "-i", UAC, "-p", "5060", "-m", str(calls), "-r", str(rate), "-rp", "1000",
             "-trace_stat", "-stf", stf, "-fd", "1"] + sipp_common,
            cwd=work, stdout=open(os.path.join(work, f"uac-{tag}.out"), "w"), stderr=subprocess.STDOUT)
        procs.append(uac)
        # a call ends at the latest after SIPp's retransmissions give up (~32 s)
        limit = a.seconds * 3 + 40
        uac_rc, uac_cpu = wait_rusage(uac, limit)
        wall = time.monotonic() - t0
        uas_rc, uas_cpu = wait_rusage(uas, 5)  # done with its last 200, or killed
        c1, k1 = cpu_ns(kpids), ticks(kpids)
        if kam.poll() is not None:
            raise RuntimeError(f"kamailio died during the run (see {kam_log.name})")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        kam_log.close()
    st = sipp_stats(stf)
    ok, failed = int(st.get("SuccessfulCall(C)", 0)), int(st.get("FailedCall(C)", 0))
    per = {p: (c1.get(p, 0) - c0.get(p, 0)) / 1e9 for p in kpids}
    cpu = sum(per.values())
    worker = max(per.values()) if per else 0.0
    r = {
        "label": f"calls-kamailio-{rate}", "relay": "kamailio-tm-rr", "offered_cps": rate,
        "calls": calls, "ok": ok, "failed": failed, "wall_s": f"{wall:.2f}",
        "achieved_cps": f"{ok / wall:.0f}", "relay_cpu_s": f"{cpu:.3f}",
        "worker_cpu_s": f"{worker:.3f}",
        "relay_user_s": f"{k1[0] - k0[0]:.2f}", "relay_sys_s": f"{k1[1] - k0[1]:.2f}", "relay_procs": len(kpids),
        "cpu_us_per_call": f"{cpu * 1e6 / ok:.1f}" if ok else "-1",
        "worker_us_per_call": f"{worker * 1e6 / ok:.1f}" if ok else "-1",
        "calls_per_cpu_s": f"{ok / cpu:.0f}" if cpu > 0 else "0",
        "uac_cpu_s": f"{uac_cpu:.2f}", "uas_cpu_s": f"{uas_cpu:.2f}",
        "uac_rc": uac_rc, "uas_rc": uas_rc,
        "retrans": st.get("Retransmissions(C)", "?"),
        "setup_ms": f"{rtd_ms(st.get('ResponseTime1(C)')):.2f}",
    }
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000", help="offered calls/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="calls per rate = rate x seconds")
    ap.add_argument("--work", default="/tmp/kamcalls", help="logs and SIPp files")
    ap.add_argument("--strict", action="store_true", help="fail when any call fails")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("calls.py needs root (network namespaces)")
    a.work = os.path.abspath(a.work)  # SIPp runs in it and writes relative to it
    os.makedirs(a.work, exist_ok=True)
    ns = f"pl-kamcalls-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    bad = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for rate in [int(x) for x in a.rates.split(",") if x]:
            r = one_rate(a, ns, rate, a.work)
            print("result: " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
            if r["ok"] == 0:
                bad.append(f"rate {rate}: no call completed")
            elif a.strict and (r["failed"] or r["ok"] != r["calls"]):
                bad.append(f"rate {rate}: {r['ok']} of {r['calls']} calls completed, {r['failed']} failed")
    except (RuntimeError, subprocess.CalledProcessError) as e:
        bad.append(str(e))
    finally:
        for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)
    if bad:
        print("calls.py: " + "; ".join(bad) + f" (logs in {a.work})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
