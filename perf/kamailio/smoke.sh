#!/bin/bash
# Functional check of stateless.cfg and tm.cfg, each with one socket and with two: three
# network namespaces (UE -- Kamailio -- core, two veth pairs), a ~1 KB MESSAGE and a REGISTER
# from the UE; the core checks Kamailio's Via on top and answers 200 OK to that Via; the UE
# must get both 200s from Kamailio's UE-side address. Needs root, kamailio and python3.
# Removes its namespaces (and stops its kamailio) on exit.
#
#   sudo perf/kamailio/smoke.sh
set -u
cd "$(dirname "$0")"
P="kamsmoke-$$"
UE="$P-ue" PX="$P-px" CO="$P-co"
TMP=$(mktemp -d)
KPID=""
cleanup() {
	[ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
	for ns in "$UE" "$PX" "$CO"; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT

set -e
for ns in "$UE" "$PX" "$CO"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add ku$$ netns "$PX" type veth peer name u$$ netns "$UE"
ip link add kc$$ netns "$PX" type veth peer name c$$ netns "$CO"
ip -n "$PX" addr add 10.250.1.1/24 dev ku$$; ip -n "$PX" link set ku$$ up
ip -n "$UE" addr add 10.250.1.2/24 dev u$$; ip -n "$UE" link set u$$ up
ip -n "$PX" addr add 10.250.2.1/24 dev kc$$; ip -n "$PX" link set kc$$ up
ip -n "$CO" addr add 10.250.2.2/24 dev c$$; ip -n "$CO" link set c$$ up
set +e

cat > "$TMP/sip.py" <<'EOF'
import re, socket, sys

def request(method, i):
    body = "x" * 600 if method == "MESSAGE" else ""
    ruri = "sip:bob@ims.example.net" if method == "MESSAGE" else "sip:ims.example.net"
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.250.1.2:5060;branch=z9hG4bK-smoke{i};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\n"
            "To: <sip:bob@ims.example.net>\r\n"
            f"Call-ID: smoke-{i}@10.250.1.2\r\nCSeq: {i} {method}\r\n"
            "Contact: <sip:alice@10.250.1.2:5060>\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

def core():  # answer 2 requests with 200 OK to their top Via; exit 1 on anything odd
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.250.2.2", 5060)); s.settimeout(5)
    for _ in range(2):
        d = s.recv(65535).decode()
        head = d.split("\r\n\r\n")[0].split("\r\n")
        vias = [l for l in head if l.startswith("Via:")]
        print(f"  core got {head[0]!r} ({len(d)} bytes), top {vias[0]!r}")
        if len(vias) != 2 or "10.250.2.1" not in vias[0] or "Max-Forwards: 69" not in head:
            sys.exit("  core: expected Kamailio's Via on top and Max-Forwards: 69")
        m = re.match(r"Via: SIP/2.0/UDP ([0-9.]+)(?::(\d+))?", vias[0])
        keep = [l for l in head[1:] if re.match(r"(Via|From|To|Call-ID|CSeq):", l)]
        rep = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
        s.sendto(rep.encode(), (m.group(1), int(m.group(2) or 5060)))

def ue():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.250.1.2", 5060)); s.settimeout(3)
    for i, method in enumerate(["MESSAGE", "REGISTER"], 1):
        s.sendto(request(method, i), ("10.250.1.1", 5060))
        d, src = s.recvfrom(65535)
        first = d.split(b"\r\n")[0].decode()
        print(f"  ue got {first!r} from {src[0]}:{src[1]}")
        if first != "SIP/2.0 200 OK" or f"CSeq: {i} {method}".encode() not in d \
                or src != ("10.250.1.1", 5060):
            sys.exit("  ue: expected the 200 OK from 10.250.1.1:5060")

try:
    {"core": core, "ue": ue}[sys.argv[1]]()
except socket.timeout:
    sys.exit(f"  {sys.argv[1]}: timed out")
EOF

fail=0
for cfg in stateless tm; do
	for mode in one two; do
		if [ $mode = one ]; then
			L=(-A 'LISTEN=udp:0.0.0.0:5060 advertise 10.250.2.1:5060')
		else
			L=(-A 'LISTEN=udp:10.250.1.1:5060' -A 'LISTEN_CORE=udp:10.250.2.1:5060')
		fi
		echo "== $cfg.cfg, $mode socket(s)"
		ip netns exec "$PX" kamailio -f "$cfg.cfg" -DD -E -n 1 -Y "$TMP/run" "${L[@]}" \
			-A 'NEXT_HOP_IP="10.250.2.2"' -A NEXT_HOP_PORT=5060 >"$TMP/kam.log" 2>&1 &
		KPID=$!
		sleep 1
		ip netns exec "$CO" python3 "$TMP/sip.py" core & CPID=$!
		sleep 0.3
		ip netns exec "$UE" python3 "$TMP/sip.py" ue; rc_ue=$?
		wait $CPID; rc_co=$?
		kill "$KPID" 2>/dev/null; wait "$KPID" 2>/dev/null; KPID=""
		if [ $rc_ue -ne 0 ] || [ $rc_co -ne 0 ]; then
			fail=1; echo "  FAIL"; sed 's/^/  kamailio: /' "$TMP/kam.log"
		else
			echo "  ok"
		fi
	done
done
[ $fail -eq 0 ] && echo "all ok"
exit $fail
