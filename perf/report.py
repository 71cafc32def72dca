#!/usr/bin/env python3
"""Writes perf/RESULTS.md and the latency plot from what perf/run collected in its raw folder.

Fails (exit 1) when a table it must fill comes out empty, so `perf/run --self-check` catches a
broken part. Only the standard library and matplotlib.
"""
import argparse
import glob
import os
import platform
import re
import subprocess
import sys
import time


def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


def read_results(raw):
    rows = {}
    path = os.path.join(raw, "results.txt")
    if os.path.exists(path):
        for line in open(path):
            if line.startswith("result:"):
                r = kv(line)
                rows[r["label"]] = r
    return rows


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def fmt_int(x):
    return f"{float(x):,.0f}"


def divan_medians(path):
    """{"group/sub/arg": median ns} from divan's tree output."""
    out, stack = {}, []
    if not os.path.exists(path):
        return out
    unit = {"ns": 1.0, "µs": 1e3, "ms": 1e6, "s": 1e9}
    for line in open(path):
        m = re.match(r"^([│ ]*)[├╰]─ (\S+)(.*)$", line.rstrip())
        if not m:
            continue
        depth = len(m.group(1)) // 3
        stack = stack[:depth] + [m.group(2)]
        cols = [c.strip() for c in m.group(3).split("│")]
        if len(cols) >= 3 and cols[2]:
            v = cols[2].split()
            if len(v) == 2 and v[1] in unit:
                out["/".join(stack)] = float(v[0]) * unit[v[1]]
    return out


def call_loop_rows(raw):
    """{suite: (ns per call, calls/s)} from call_loop.txt's table."""
    out = {}
    p = os.path.join(raw, "call_loop.txt")
    if os.path.exists(p):
        for l in open(p):
            c = [x.strip() for x in l.split("|")]
            # the first table (per call); a later one (per message kind) has more columns
            if len(c) == 7 and "/" in c[1] and c[2].replace(".", "").isdigit():
                out.setdefault(c[1].replace(" ", ""), (float(c[2]), float(c[4])))
    return out


def kamailio_calls(raw):
    """perf/kamailio/calls.py's result lines, by offered rate."""
    p = os.path.join(raw, "calls.txt")
    rows = [kv(l) for l in open(p) if l.startswith("result:")] if os.path.exists(p) else []
    return sorted(rows, key=lambda r: int(r["offered_cps"]))


def lab_calls(raw):
    """`pcscf lab --calls` outputs (lab-calls-RATE.txt): what each says about the calls and the worker."""
    out = []
    for path in glob.glob(os.path.join(raw, "lab-calls-*.txt")):
        t = open(path).read()
        m = re.search(r"^calls: (\d+) ok, (\d+) failed of (\d+) in ([\d.]+) s \((\d+) calls/s\)", t, re.M)
        w = re.findall(r"worker \d+: rx (\d+) tx (\d+) batches (\d+) ~(\d+) ns/packet", t)
        if not m or not w:
            continue
        ok = int(m.group(1))
        rx = sum(int(x[0]) for x in w)
        busy_ns = sum(int(x[0]) * int(x[3]) for x in w)
        batches = sum(int(x[2]) for x in w)
        so = re.search(r"^originating setup INVITE→200: (.*)$", t, re.M)
        st = re.search(r"^terminating setup INVITE→200: (.*)$", t, re.M)
        fwd = re.search(r"forwarded (\d+) punted", t)
        sm = re.search(r"sampler: worker_on_cpu_s=([\d.]+) worker_wait_s=([\d.]+)", t)
        share = float(sm.group(1)) / (float(sm.group(1)) + float(sm.group(2))) if sm and float(sm.group(1)) > 0 else None
        out.append({
            "rate": int(re.search(r"lab-calls-(\d+)\.txt$", path).group(1)),
            "ok": ok, "failed": int(m.group(2)), "calls": int(m.group(3)), "secs": float(m.group(4)),
            "cps": int(m.group(5)), "rx": rx, "batches": batches, "ns_per_packet": busy_ns / max(rx, 1),
            "forwarded": int(fwd.group(1)) if fwd else 0,
            "busy_us_per_call": busy_ns / 1e3 / ok if ok else -1.0,
            "share": share,
            # the busy time scaled by the share of the run the worker had its core
            "cpu_us_per_call": busy_ns * share / 1e3 / ok if ok and share else -1.0,
            "orig": so.group(1) if so else "?", "term": st.group(1) if st else "?",
        })
    return sorted(out, key=lambda r: r["rate"])


def best_kamailio(rows):
    """The run most favourable to Kamailio: least CPU per call among runs where every call
    completed (any run when none did)."""
    clean = [r for r in rows if int(r["failed"]) == 0 and r["ok"] == r["calls"] and float(r["cpu_us_per_call"]) > 0]
    pool = clean or [r for r in rows if float(r["cpu_us_per_call"]) > 0]
    return min(pool, key=lambda r: float(r["cpu_us_per_call"])) if pool else None


def best_lab(rows):
    """Among the runs where every call completed (any run when none did), the one where the
    worker had most of its core: its estimate needs the least correction (the least CPU per
    call would favour the most-corrected, least-trustworthy run)."""
    clean = [r for r in rows if r["failed"] == 0 and r["ok"] == r["calls"] and r["cpu_us_per_call"] > 0]
    pool = clean or [r for r in rows if r["cpu_us_per_call"] > 0]
    return max(pool, key=lambda r: (r["share"], -r["cpu_us_per_call"])) if pool else None


def target_rows(raw, res):
    rows = []
    pl = os.path.join(raw, "pipeline_loop.txt")
    gcm = None
    if os.path.exists(pl):
        for l in open(pl):
            if l.startswith("| null / aes-gcm | UDP"):
                gcm = float(l.split("|")[4].strip())
    rows.append(("≥ 500,000 protected messages/s through the in-memory pipeline (stretch 1,000,000)",
                 f"{gcm:,.0f}/s (pipeline_loop)" if gcm else "?", None if gcm is None else gcm >= 500_000))
    x = res.get("esp-xdp-null_aes-gcm")
    rows.append(("≥ 250,000/s through AF_XDP on a veth pair",
                 f"{float(x['delivered_pps']):,.0f}/s (100k UEs)" if x else "?",
                 None if not x else float(x["delivered_pps"]) >= 250_000))
    d = divan_medians(os.path.join(raw, "bench-esp.txt"))
    dec, enc = d.get("aws_lc/gcm_decrypt/1000"), d.get("aws_lc/gcm_encrypt/1000")
    if dec and enc:
        pps = 1e9 / (dec + enc)
        rows.append(("≥ 2,000,000 packets/s of ESP decrypt-verify-encrypt, SIP stage off",
                     f"{pps:,.0f}/s ({dec:.0f} + {enc:.0f} ns at 1000 B, bench/esp)", pps >= 2e6))
    else:
        rows.append(("≥ 2,000,000 packets/s of ESP decrypt-verify-encrypt, SIP stage off",
                     "not measured in this run (full mode only)", None))
    cl = call_loop_rows(raw).get("null/aes-gcm")
    rows.append(("≥ 50,000 calls/s on one core in memory, aes-gcm (a call = INVITE with ~900 B SDP, 100, 180, 200, ACK, BYE, 200)",
                 f"{cl[1]:,.0f}/s ({cl[0] / 1e3:.1f} µs per call, call_loop)" if cl else "?",
                 None if cl is None else cl[1] >= 50_000))
    kb, lb = best_kamailio(kamailio_calls(raw)), best_lab(lab_calls(raw))
    if cl and kb:
        kus = float(kb["cpu_us_per_call"])
        r_mem = kus / (cl[0] / 1e3)
        txt = f"{r_mem:.1f}× in memory (call_loop aes-gcm {cl[0] / 1e3:.1f} µs vs Kamailio {kus:.0f} µs CPU per call)"
        ratios = [r_mem]
        if lb:
            r_lab = kus / lb["cpu_us_per_call"]
            ratios.append(r_lab)
            txt += f"; {r_lab:.1f}× through AF_XDP (lab worker ~{lb['cpu_us_per_call']:.0f} µs CPU per call, estimated)"
        rows.append(("≥ 10× Kamailio's calls/s per core (tm + record_route, the same messages)", txt,
                     min(ratios) >= 10))
    else:
        rows.append(("≥ 10× Kamailio's calls/s per core (tm + record_route, the same messages)", "?", None))
    p, k = res.get("plain-message-pcscf"), res.get("plain-message-kamailio-stateless")
    if p and k and float(k["delivered_pps"]) > 0:
        r = float(p["delivered_pps"]) / float(k["delivered_pps"])
        rows.append(("≥ 20× Kamailio's stateless relay rate per core, plain SIP",
                     f"{r:.1f}× (MESSAGE, one core each)", r >= 20))
    e = res.get("esp-xdp-80pct")
    if e:
        a99 = float(e.get("added_p99_us", -1))
        rows.append(("p99 added latency < 30 µs at 80 % of the maximum load",
                     f"added by pcscf p99 {a99:.0f} µs (p50 {e.get('added_p50_us')} µs); end to end p99 "
                     f"{e['p99_us']} µs", 0 <= a99 < 30))
    rl = os.path.join(raw, "register_loop.txt")
    regs = None
    if os.path.exists(rl):
        for l in open(rl):
            m = re.search(r"null/aes-gcm.* ([\d]+) registrations/s on the registration thread", l)
            if m:
                regs = int(m.group(1))
    rows.append(("≥ 20,000 full registrations/s on the registration thread",
                 f"{regs:,}/s (register_loop, registrar alone)" if regs else "?",
                 None if regs is None else regs >= 20_000))
    # issue 15 (the one-pass SIP engine): instructions, from perf/profile's callgrind runs
    cg = os.path.join(raw, "callgrind.txt")
    cgl = [kv(l) for l in open(cg)] if os.path.exists(cg) else []
    per_msg = next((int(c["per_message"]) for c in cgl if c.get("suite") == "null/aes-gcm"), None)
    rows.append(("≤ 12,000 instructions per protected MESSAGE in + its 200 out, aes-gcm (callgrind, `poll_once`)",
                 f"{per_msg:,}" if per_msg else "?",
                 None if per_msg is None else per_msg <= 12_000))
    per_reg = next((int(c["per_register"]) for c in cgl if "per_register" in c), None)
    rows.append(("≤ 12,000 instructions per full REGISTER rewrite (parse, validate, §1.1 checks, rewrite; callgrind, `sip_loop`)",
                 f"{per_reg:,}" if per_reg else "?",
                 None if per_reg is None else per_reg <= 12_000))
    lab = os.path.join(raw, "lab.txt")
    mcpu = None
    if os.path.exists(lab):
        mcpu = re.search(r"registration thread: \d+ messages handled, [\d.]+ s of CPU \(([\d.]+) us per message\)",
                         open(lab).read())
    us = float(mcpu.group(1)) if mcpu else None
    rows.append(("≤ 10 µs of registration-thread CPU per message it handles (`pcscf lab`, its control loop)",
                 f"{us:.1f} µs" if us is not None else "?",
                 None if us is None else us <= 10.0))
    mp = os.path.join(raw, "memory.txt")
    mem = [kv(l) for l in open(mp) if l.startswith("result:")] if os.path.exists(mp) else []
    if mem:
        worst = max(int(m["bytes_per_ue"]) for m in mem)
        rows.append(("≤ 2 KB of memory per registered UE",
                     f"{worst:,} B at most ({', '.join(m['ues'] for m in mem)} UEs)", worst <= 2048))
    return rows


def calls_section(raw, w, problems):
    w("## 1b. Calls: pcscf and Kamailio side by side")
    w("")
    w("A call is seven messages: INVITE with the ~900-byte SDP offer of the lab's UEs "
      "(`src/sim/call.rs` `sdp_offer`), 100, 180, 200 (SDP answer), ACK, BYE, 200. The figure "
      "compared is **CPU time per completed call on one core** (calls/s per core = 10⁶ / µs "
      "per call): on these shared 2 vCPUs the load generators, the relay and other work take "
      "turns, so wall-clock saturation says little about the relay.")
    w("")
    cl = call_loop_rows(raw)
    p = os.path.join(raw, "call_loop.txt")
    lines = [l.rstrip() for l in open(p)] if os.path.exists(p) else []
    w("**pcscf in memory** (`perf/call_loop.rs`: one worker over the in-memory backend, the "
      "UE's requests in over ESP SA1, the core's answers out over SA2, double Record-Route, "
      "ACK and BYE by their route set; batches of 64; only `poll_once` timed, no I/O):")
    w("")
    # its tables, each as a block (per call; then per message kind, when it prints one)
    blocks, cur = [], []
    for l in lines + [""]:
        if l.startswith("|"):
            cur.append(l)
        elif cur:
            blocks.append(cur)
            cur = []
    for i, b in enumerate(blocks):
        if i == 1:
            w("")
            w("Per message of the call (ns; the INVITE and the 200 carry the SDP):")
            w("")
        w("\n".join(b))
    if not cl:
        problems.append("call_loop table empty")
    w("")
    labs = lab_calls(raw)
    w("**pcscf through AF_XDP** (`pcscf lab --ues 100 --calls N --call-rate R --messages 0` run "
      "by `perf/lab_calls.py`: ue-sim and core-sim over veth, ESP (aes-gcm), half the calls "
      "originating and half terminating; one worker pinned to CPU 0, busy-polling; the lab's "
      "other threads, the simulators included, kept on the other CPU, which caps the rate they "
      "can drive). The worker polls all the time, so its CPU time from "
      "/proc is its whole core whatever the load; the figure per call is its **busy time**: "
      "wall time inside batches that had packets (`busy_ns`, printed by pcscf as ns/packet, "
      "× its rx / completed calls). It includes the AF_XDP syscalls and the veth transmit "
      "into the simulators' namespaces, and excludes idle polling; but it is wall time, so it "
      "also counts the moments something else (other work on the machine) preempted the worker "
      "inside a batch (an upper bound). `perf/lab_calls.py` samples the worker thread's "
      "schedstat over the run (on a CPU vs runnable and waiting: a busy-polling thread never "
      "sleeps), and the **estimated CPU per call** is the busy time × the worker's share of "
      "the run on its core (preemption taken as evenly spread; it is likelier while packets "
      "flow, so this is still on the high side). A terminating call is 6 messages through "
      "pcscf (the simulated UE sends no 100); registrations (4 packets per UE) are in rx. The "
      "lab's links run at MTU 3000 with calls: a VoLTE INVITE does not fit 1500 over UDP "
      "(issue 14, TCP).")
    w("")
    w("| requested calls/s | completed calls/s | ok / failed | INVITE→200 originating | INVITE→200 terminating | worker rx (packets per batch) | busy ns per packet | busy µs per call | worker's share of its core | **~CPU µs per call** | calls/s per core |")
    w("|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in labs:
        est = r["cpu_us_per_call"]
        w(f"| {r['rate']:,} | {r['cps']:,} | {r['ok']:,} / {r['failed']:,} | {r['orig']} | {r['term']} | "
          f"{r['rx']:,} ({r['rx'] / max(r['batches'], 1):.1f}) | {r['ns_per_packet']:,.0f} | "
          f"{r['busy_us_per_call']:.1f} | {'%.0f %%' % (100 * r['share']) if r['share'] else '?'} | "
          f"**{est:.1f}** | {1e6 / est if est > 0 else 0:,.0f} |")
    if not any(r["ok"] > 0 for r in labs):
        problems.append("no pcscf lab calls completed")
    if not any(r["share"] for r in labs):
        problems.append("pcscf lab calls: the worker thread was not sampled")
    w("")
    ks = kamailio_calls(raw)
    w("**Kamailio 5.6** (`perf/kamailio/calls.cfg`: `record_route()` on the initial INVITE, "
      "`loose_route()` + `t_relay()` in dialog, `t_relay_to_udp()` to the next hop; one UDP "
      "worker (`-n 1`), `-x tlsf`, `MAX_BRANCHES=1`), between two SIPps (`perf/kamailio/call_uac.xml` "
      "→ Kamailio → `call_uas.xml`, same headers and SDP as call_loop's) on loopback addresses "
      "of a namespace of their own (`perf/kamailio/calls.py`). Kamailio's CPU: all its "
      "processes (UDP worker, tm timers, main) from /proc/PID/task/*/schedstat over the run; "
      "tm answers the INVITE with its own 100 and absorbs the callee's.")
    w("")
    w("| offered calls/s | completed calls/s | ok / failed | Kamailio CPU-s (user + sys) | **CPU µs per call** | calls per CPU-second (per core) | SIPp caller / callee CPU-s | mean INVITE→200 (ms) |")
    w("|---:|---:|---|---|---:|---:|---|---:|")
    for r in ks:
        w(f"| {int(r['offered_cps']):,} | {int(r['achieved_cps']):,} | {int(r['ok']):,} / {int(r['failed']):,} | "
          f"{r['relay_cpu_s']} ({r['relay_user_s']} + {r['relay_sys_s']}) | **{r['cpu_us_per_call']}** | "
          f"{fmt_int(r['calls_per_cpu_s'])} | {r['uac_cpu_s']} / {r['uas_cpu_s']} | {r['setup_ms']} |")
    if not any(int(r["ok"]) > 0 for r in ks):
        problems.append("no Kamailio calls completed")
    w("")
    kb, lb = best_kamailio(ks), best_lab(labs)
    if kb:
        kus = float(kb["cpu_us_per_call"])
        w(f"Side by side, per core (Kamailio: its least CPU per call among the runs where every "
          f"call completed, at {int(kb['offered_cps']):,} calls/s offered; pcscf through AF_XDP: "
          "the lab run where the worker had most of its core, the least-corrected estimate):")
        w("")
        w("| relay | how | µs per call | calls/s per core | × Kamailio |")
        w("|---|---|---:|---:|---:|")
        for suite, (ns, _) in cl.items():
            w(f"| pcscf, {suite.replace('/', ' / ')} | in memory (call_loop), no I/O | {ns / 1e3:.1f} | "
              f"{1e9 / ns:,.0f} | **{kus / (ns / 1e3):.1f}×** |")
        if lb:
            w(f"| pcscf, null / aes-gcm | AF_XDP, lab at {lb['rate']:,} calls/s, worker busy time × its core share (estimate) | "
              f"{lb['cpu_us_per_call']:.1f} | {1e6 / lb['cpu_us_per_call']:,.0f} | "
              f"**{kus / lb['cpu_us_per_call']:.1f}×** |")
        w(f"| Kamailio tm + record_route | {int(kb['offered_cps']):,} calls/s, plain UDP on loopback, CPU from /proc | {kus:.1f} | "
          f"{1e6 / kus:,.0f} | 1× |")
        same = [r for r in ks if lb and int(r["offered_cps"]) == lb["rate"] and r is not kb and float(r["cpu_us_per_call"]) > 0]
        for r in same:
            # at the lab's rate: each side's per-wakeup costs spread over the same calls
            u = float(r["cpu_us_per_call"])
            w(f"| Kamailio tm + record_route | {lb['rate']:,} calls/s, the pcscf lab row's rate | {u:.1f} | "
              f"{1e6 / u:,.0f} | pcscf AF_XDP at the same rate: **{u / lb['cpu_us_per_call']:.1f}×** |")
        w("")
        w("Both relays cost more per call at low rates: Kamailio wakes and makes two syscalls per "
          "datagram (its CPU per call falls as the rate rises, table above), pcscf's worker turns "
          "batches of about one packet around with cold caches. The AF_XDP row, taken at the "
          "rates the simulators can drive from one vCPU, is therefore pessimistic for pcscf "
          "against Kamailio's best; the row at the same rate compares like with like.")
        w("")
        w("Not the same work: pcscf's calls are ESP-protected on the UE side (decrypt + verify in, "
          "encrypt out) with its P-CSCF edits (double Record-Route, P-Asserted-Identity, "
          "P-Charging-Vector, route-set checks) and keeps no transaction state; Kamailio relays "
          "plain SIP with one Record-Route and tm's transactions (two per call) plus its "
          "kernel UDP socket work (its sys time). The in-memory rows exclude all I/O; the AF_XDP "
          "row includes it.")
        w("")


def tcp_section(raw, w, problems):
    w("## 1c. SIP over TCP inside ESP (issue 14: where the TCP is terminated)")
    w("")
    w("Since ESP is ours, the TCP inside it is ours to terminate: in user space (smoltcp, one "
      "`tcp::Endpoint` per SA set, `src/tcp/`) or in the kernel, handing each decrypted segment "
      "to it through a TUN device. **`perf/tcp_tun.rs`**: the same UE (smoltcp, the harness) "
      "sends SIP MESSAGEs to either server; the server's wall-clock time per message, side by "
      "side in one run, no ESP (it costs the same either way). The kernel's figure counts the "
      "TUN writes and reads and the socket reads, and the TCP work the kernel does inside them; "
      "work the kernel defers to another CPU or to ksoftirqd is not counted (its figure is if "
      "anything low). **`perf/tcp_loop.rs`**: the P-CSCF's side of receiving a "
      "protected message, ESP included, over TCP (decrypt, TCP, frame, parse; ACKs built and "
      "encrypted) beside the same message over UDP (decrypt, parse); allocations counted in "
      "the timed part; and the memory of one idle SA set's TCP.")
    w("")
    found = 0
    for name in ["tcp_tun.txt", "tcp_loop.txt"]:
        p = os.path.join(raw, name)
        if not os.path.exists(p):
            continue
        lines = [l.rstrip() for l in open(p)]
        w(f"`{name[:-4]}`:")
        w("")
        mem = [l for l in lines if l.startswith("memory")]
        table = [l for l in lines if l.startswith("|")]
        for l in mem:
            w(f"- {l}")
        if mem:
            w("")
        for l in table:
            w(l)
        found += sum(1 for l in table[2:])
        w("")
    if not found:
        problems.append("tcp_loop / tcp_tun tables empty")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--mode", default="full")
    a = ap.parse_args()
    raw = a.raw
    problems = []
    res = read_results(raw)
    md = []
    w = md.append

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    w("# pcscf performance results")
    w("")
    if a.mode != "full":
        w("**Self-check run (tiny sizes): these figures only show that every part works.**")
        w("")
    w(f"Generated by `sudo perf/run` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"commit `{sh('git rev-parse --short HEAD') or '?'}`.")
    w("")
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    w(f"- Machine: {cpu or '?'}, {os.cpu_count()} vCPUs, {mem_gib:.0f} GiB, "
      f"kernel {platform.release()}")
    w(f"- Toolchain: {sh('rustc --version')}; Kamailio: {sh('kamailio -v 2>/dev/null | head -n1') or 'not installed'}")
    w("- Everything (load generator, sink, relay, kernel veth work) shares these cores: on 2 vCPUs "
      "the end-to-end figures are floors for the relay, not its ceiling.")
    w("- Raw outputs of this run: `" + raw + "/` (not committed).")
    w("")

    # targets (issue 6), each as measured
    targets = target_rows(raw, res)
    w("## Targets (per core, ~1 KB SIP, aes-gcm)")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    for t, m, ok in targets:
        w(f"| {t} | {m} | {'yes' if ok else ('**no**' if ok is False else '?')} |")
    w("")
    w("Where a target is missed, the sections below say where the time goes; the notes of "
      "issue 6 say what would close the gap.")
    w("")

    # 1. in-memory pipeline
    w("## 1. The in-memory pipeline (no I/O)")
    w("")
    w("`target/release/examples/pipeline_loop 20`: a registered UE's protected ~1 KB MESSAGE in "
      "(ESP decrypt + verify → SIP rewrite → forward) and the core's 200 out (SIP rewrite → ESP "
      "encrypt), through the worker over the in-memory backend, batches of 64; TCP: the same "
      "round trip with the UE's MESSAGEs on its connection inside the SAs (segments in over SA1, "
      "the 200s and our ACKs out over SA3), 8 per batch, the UE's side untimed.")
    w("")
    pl = os.path.join(raw, "pipeline_loop.txt")
    lines = [l.rstrip() for l in open(pl)] if os.path.exists(pl) else []
    if not any(l.startswith("| null") for l in lines):
        problems.append("pipeline_loop table empty")
    md.extend(l for l in lines if l.startswith("|"))
    w("")
    for name, title in [("bench-pipeline.txt", "cargo bench --bench pipeline"),
                        ("bench-pipeline-null.txt", "cargo bench --bench pipeline --features esp-null (ESP crypto swapped for a no-op)"),
                        ("bench-esp.txt", "cargo bench --bench esp (ESP alone, the SIP stage off: decrypt + verify and encrypt per packet)"),
                        ("bench-satable.txt", "cargo bench --bench satable (SA lookups with 1k / 100k / 1M installed SAs)")]:
        p = os.path.join(raw, name)
        if os.path.exists(p):
            w(f"`{title}` (divan; columns fastest, slowest, median, mean, samples, iterations):")
            w("")
            w("```")
            md.extend(l.rstrip() for l in open(p) if l.strip() and not l.startswith("Timer"))
            w("```")
            w("")

    # 1b. calls
    calls_section(raw, w, problems)
    # 1c. TCP inside ESP
    tcp_section(raw, w, problems)

    # 2./3. side by side
    w("## 2. Side by side: pcscf and Kamailio relaying plain SIP")
    w("")
    w("Same namespaces, same frames (~1 KB MESSAGE or the 1.1 KB IMS REGISTER of tests/data, one "
      "Call-ID each), blasted flat out from the UE namespace with sendmmsg; a sink in the core "
      "namespace counts what comes out and takes each message's latency. pcscf: one pinned worker, "
      "AF_XDP, `stateless_relay` (MESSAGE: Via added, forwarded by the worker; REGISTER: the full "
      "P-CSCF REGISTER path of the registration thread — §1.1 checks, Path, integrity-protected, "
      "P-Visited-Network-ID, P-Charging-Vector). Kamailio 5.6: one UDP worker (`-n 1`), "
      "`perf/kamailio/stateless.cfg` (`forward()`) or `tm.cfg` (`t_relay()`). CPU-seconds are the "
      "relay's own (all its threads/processes, from /proc) over the run: pcscf busy-polls, so its "
      "per-CPU-second figure counts idle polling too.")
    w("")
    w("| traffic | relay | offered (msg/s) | delivered (msg/s) | loss | relay CPU-s | msgs per relay CPU-s | p50 / p99 latency (µs) |")
    w("|---|---|---:|---:|---:|---:|---:|---|")
    have = 0
    for traffic in ["message", "register"]:
        for relay in ["pcscf", "kamailio-stateless", "kamailio-tm"]:
            r = res.get(f"plain-{traffic}-{relay}")
            if not r:
                continue
            have += 1
            w(f"| {traffic.upper()} | {relay} | {fmt_int(r['offered_pps'])} | **{fmt_int(r['delivered_pps'])}** | "
              f"{100*float(r['loss']):.1f} % | {r['relay_cpu_s']} | "
              f"{fmt_int(r['msgs_per_cpu_s']) + (' (busy-polls)' if relay == 'pcscf' and traffic == 'message' else '')} | "
              f"{r['p50_us']} / {r['p99_us']} |")
    if have < 6:
        problems.append(f"side-by-side table has {have} of 6 rows")
    w("")
    rp = res.get("plain-register-pcscf")
    if rp and float(rp.get("reg_thread_cpu_s", 0)) > 0:
        n, cpu = int(rp["reg_thread_msgs"]), float(rp["reg_thread_cpu_s"])
        w(f"pcscf's REGISTERs go to its one registration thread (not a pinned core: on 2 vCPUs it "
          f"competes with the busy-polling worker and the blaster). Its own CPU: {cpu:.2f} s for "
          f"{n:,} REGISTERs, **{cpu * 1e6 / max(n, 1):.1f} µs each ({n / cpu:,.0f} per CPU-second)**, "
          f"against Kamailio stateless {1e6 / max(1.0, float(res.get('plain-register-kamailio-stateless', {}).get('msgs_per_cpu_s', 0) or 1)):.1f} µs "
          "per relayed REGISTER (which does no P-CSCF work: no §1.1 checks, Path, transaction).")
        w("")
    ratios = []
    for traffic in ["message", "register"]:
        p = res.get(f"plain-{traffic}-pcscf")
        for k in ["kamailio-stateless", "kamailio-tm"]:
            q = res.get(f"plain-{traffic}-{k}")
            if p and q and float(q["delivered_pps"]) > 0:
                ratios.append(f"{traffic.upper()} pcscf / {k}: **{float(p['delivered_pps'])/float(q['delivered_pps']):.1f}×** "
                              "the messages per second of one core (one worker each)")
    for r in ratios:
        w(f"- {r}")
    w("")
    lo_p, lo_k = res.get("plain-message-pcscf-low"), res.get("plain-message-kamailio-stateless-low")
    if lo_p and lo_k:
        w(f"At a light 20,000 MESSAGE/s: pcscf latency p50 {lo_p['p50_us']} µs, p99 {lo_p['p99_us']} µs; "
          f"Kamailio stateless p50 {lo_k['p50_us']} µs, p99 {lo_k['p99_us']} µs (the sink's own "
          "socket wake-up included in both).")
        w("")

    # ESP
    w("## 3. ESP-protected traffic from registered UEs (pcscf only)")
    w("")
    w("UEs installed at start through the bench-only hook (`pcscf run --bench-preload-ues N`, a "
      "`--features bench-hooks` build); the load tool builds each UE's SA1 from the same keys, "
      "encrypts every frame before the clock starts (each is sent once: replay protection), and "
      "sends them from the UEs' own addresses over a raw socket. pcscf decrypts, verifies, checks "
      "the SA's selectors, rewrites toward the Service-Route with P-Asserted-Identity and forwards.")
    w("")
    w("Latency: end to end (sent in the UE namespace → read by the sink), and added inside pcscf "
      "(its workers' own rx → tx histogram).")
    w("")
    w("| run | backend | workers | packets per worker | UEs | suite | offered (pkt/s) | delivered (msg/s) | loss | end-to-end p50 / p99 / p99.9 (µs) | added by pcscf p50 / p99 / p99.9 (µs) |")
    w("|---|---|---:|---|---:|---|---:|---:|---:|---|---|")
    esp_rows = [r for l, r in sorted(res.items()) if l.startswith("esp-")]
    for r in esp_rows:
        w(f"| {r['label']} | {r['backend']} | {r['workers']} | {r.get('worker_rx', '?').replace('/', ' / ')} | {fmt_int(r['ues'])} | {r['suite']} | "
          f"{fmt_int(r['offered_pps'])} | **{fmt_int(r['delivered_pps'])}** | {100*float(r['loss']):.1f} % | "
          f"{r['p50_us']} / {r['p99_us']} / {r['p999_us']} | "
          f"{r.get('added_p50_us', '?')} / {r.get('added_p99_us', '?')} / {r.get('added_p999_us', '?')} |")
    if not esp_rows:
        problems.append("ESP table empty")
    w("")
    w("Scaling rows (`esp-scale-*`): AF_PACKET spreads one veth over the workers by fanout; "
      "AF_XDP binds each worker's sockets to one queue of a multi-queue veth in native (drv) XDP, "
      "where the sender's flow hash picks the queue (generic XDP on veth sees every packet on "
      "queue 0). On 2 vCPUs the workers busy-poll the cores the sender and the kernel's veth "
      "work need: these rows show the spread and that nothing is lost, not the scaling a "
      "machine with spare cores gives.")
    w("")
    w("Flat-out runs queue in the veth and the sink, so their latency is queueing; `esp-xdp-80pct` "
      "offers 80 % of the flat-out xdp/aes-gcm rate at an even pace (the latency target's load).")
    w("")

    # memory
    w("## 4. Memory per registered UE")
    w("")
    w("`load --memory-only --ues N`: pcscf's resident memory before and after installing N "
      "registered UEs (their SA sets, registrations, bindings), divided by N.")
    w("")
    w("| UEs | install time (s) | RSS before (MiB) | RSS after (MiB) | bytes per UE |")
    w("|---:|---:|---:|---:|---:|")
    mp = os.path.join(raw, "memory.txt")
    mem = [kv(l) for l in open(mp) if l.startswith("result:")] if os.path.exists(mp) else []
    for m in mem:
        w(f"| {fmt_int(m['ues'])} | {m['seconds']} | {int(m['rss_before'])/2**20:.0f} | "
          f"{int(m['rss_after'])/2**20:.0f} | **{fmt_int(m['bytes_per_ue'])}** |")
    if not mem:
        problems.append("memory table empty")
    w("")

    # registration
    w("## 5. Registration rate (the registration thread)")
    w("")
    lab = os.path.join(raw, "lab.txt")
    labl = [l.rstrip() for l in open(lab)] if os.path.exists(lab) else []
    if not any("registrations:" in l for l in labl):
        problems.append("lab output has no registrations line")
    rl = os.path.join(raw, "register_loop.txt")
    rll = [l.strip() for l in open(rl)] if os.path.exists(rl) else []
    w("The registration thread alone, without I/O (`perf/register_loop.rs`: the sans-IO registrar "
      "fed REGISTER → the core's 401 with CK/IK → four SAs built and installed → protected "
      "REGISTER with Security-Verify → 200 → registration published; the simulated core and UEs "
      "run in the same loop, untimed):")
    w("")
    for l in rll:
        w(f"- {l}")
    if not rll:
        problems.append("register_loop output missing")
    w("")
    w("`pcscf lab` (ue-sim and core-sim with Milenage, the full AKA flow with ESP, 4 SAs per UE). "
      "The simulators share the 2 vCPUs with pcscf, so the offered rate is what they can drive; "
      "the registration thread's own capacity is its CPU time per registration (each "
      "registration is 4 punted messages: REGISTER, 401, protected REGISTER, 200):")
    w("")
    txt = "\n".join(labl)
    mreg = re.search(r"registrations: (\d+) ok, (\d+) failed in ([\d.]+) s \((\d+) registrations/s\)", txt)
    mcpu = re.search(r"registration thread: (\d+) messages handled, ([\d.]+) s of CPU", txt)
    if mreg and mcpu and float(mcpu.group(2)) > 0:
        regs, cpu = int(mreg.group(1)), float(mcpu.group(2))
        w(f"- **{int(mreg.group(4)):,} registrations/s** offered and completed ({regs:,} UEs, "
          f"{mreg.group(2)} failed); registration thread CPU in its control loop {cpu:.2f} s → "
          f"**{regs / cpu:,.0f} registrations per CPU-second** of the registration thread "
          f"({cpu * 1e6 / regs:.0f} µs each).")
        w("")
    else:
        problems.append("lab: no registrations / CPU line")
    w("```")
    md.extend(labl)
    w("```")
    w("")

    # profiles
    w("## 6. Profiles")
    w("")
    cg = os.path.join(raw, "callgrind.txt")
    cgl = [kv(l) for l in open(cg)] if os.path.exists(cg) else []
    w("Instructions per message (MESSAGE in + its 200 out) inside `Worker::poll_once`, "
      "callgrind on `pipeline_loop` (`perf/profile`): the stable figure to track.")
    w("")
    w("| suite | instructions per message |")
    w("|---|---:|")
    for c in cgl:
        if "suite" in c:
            w(f"| {c['suite']} | {fmt_int(c['per_message'])} |")
    for c in cgl:
        if "per_registration" in c:
            w("")
            w(f"Instructions per registration inside `Registrar::handle_message` (callgrind on "
              f"`register_loop 500`, 4 messages each): **{fmt_int(c['per_registration'])}**.")
        if "per_register" in c:
            w("")
            w(f"Instructions per full REGISTER rewrite (parse, validate, §1.1 checks, rewrite; "
              f"callgrind on `sip_loop 2000`): **{fmt_int(c['per_register'])}**.")
    if not cgl:
        problems.append("callgrind table empty")
    w("")
    pw = os.path.join(raw, "profile-worker.txt")
    if os.path.exists(pw):
        w("`perf record -e cpu-clock -g` of the pcscf process relaying ESP at 200k pkt/s (xdp, "
          "aes-gcm), hottest symbols (`[k]` kernel, `[.]` user):")
        w("")
        w("```")
        for l in open(pw):
            f = l.split()
            if len(f) >= 3:
                w(f"{f[0]:>8} {f[1]} {' '.join(x for x in f[2:] if x != '-')}")
        w("```")
    else:
        problems.append("no worker profile")
    w("")

    # plot
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4.5))
        n = 0
        for h in sorted(glob.glob(os.path.join(raw, "hist-*.csv"))):
            label = os.path.basename(h)[5:-4]
            if not any(k in label for k in ["80pct", "low", "esp-xdp-null", "kamailio-stateless"]):
                continue
            xs, ys = [], []
            for line in open(h).readlines()[1:]:
                p, v = line.strip().split(",")
                p = float(p)
                if p >= 100.0:
                    continue
                xs.append(1.0 / (1.0 - p / 100.0))
                ys.append(float(v))
            if xs:
                ax.plot(xs, ys, label=label)
                n += 1
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency UE ns → core ns (µs)")
        ax.set_title("pcscf latency percentiles")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        if n == 0:
            problems.append("latency plot has no curves")
        w("## 7. Latency percentiles")
        w("")
        w(f"![latency percentiles]({os.path.basename(a.plot)})")
        w("")
    except Exception as e:  # noqa: BLE001
        problems.append(f"plot: {e}")

    w("## How to reproduce")
    w("")
    w("```")
    w("sudo perf/run              # installs kamailio, valgrind, linux-perf, matplotlib if missing")
    w("sudo perf/run --self-check # the same, tiny sizes, output in target/perf-selfcheck/")
    w("```")
    w("")
    w("Each load run alone: `sudo target/release/examples/load --help` (after "
      "`cargo build --release --features bench-hooks --bin pcscf --example load`).")
    with open(a.out, "w") as f:
        f.write("\n".join(md) + "\n")
    if problems:
        print("report problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"wrote {a.out} and {a.plot}")


if __name__ == "__main__":
    main()
