#!/usr/bin/env python3
"""Independent ESP implementation for pcscf's interop tests: scapy's SecurityAssociation.

Reads JSON cases on stdin, prints one line per case ("OK <name> ..." or "FAIL <name> <why>"),
exits 1 if any case failed.

  check: {"name","spi","crypt","crypt_key","auth","auth_key","packet","inner"}
         scapy decrypts and ICV-checks `packet` (an IP packet with ESP, built by pcscf);
         the decrypted transport segment must equal `inner`.
  build: {"name","spi","crypt","crypt_key","auth","auth_key","family","l4","sport","dport","data"}
         scapy builds an ESP packet (seq 1); prints "OK <name> <esp hex> <plain hex>".
Keys and packets are hex. Algorithm names are scapy's ("AES-CBC", "3DES", "AES-GCM",
"AES-NULL-GMAC", "NULL", "HMAC-SHA1-96", "HMAC-MD5-96"); GCM/GMAC keys are key || salt.
"""
import json
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw


def sa_of(c):
    return SecurityAssociation(
        ESP,
        spi=c["spi"],
        crypt_algo=c["crypt"],
        crypt_key=bytes.fromhex(c["crypt_key"]) if c["crypt_key"] else None,
        auth_algo=c["auth"],
        auth_key=bytes.fromhex(c["auth_key"]) if c["auth_key"] else None,
    )


def check(c):
    raw = bytes.fromhex(c["packet"])
    pkt = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    if ESP not in pkt:
        return "not ESP"
    dec = sa_of(c).decrypt(pkt)  # raises on ICV mismatch
    l4 = dec.getlayer(UDP) or dec.getlayer(TCP)
    if l4 is None:
        return "no UDP/TCP inside: %r" % dec
    got = bytes(l4)
    if got != bytes.fromhex(c["inner"]):
        return "inner mismatch: %s" % got.hex()
    return None


def build(c):
    if c["family"] == 4:
        ip = IP(src="10.77.1.2", dst="10.77.1.1")
    else:
        ip = IPv6(src="fd00:77:1::2", dst="fd00:77:1::1")
    l4 = UDP if c["l4"] == "udp" else TCP
    plain = ip / l4(sport=c["sport"], dport=c["dport"]) / Raw(bytes.fromhex(c["data"]))
    plain = plain.__class__(bytes(plain))  # freeze lengths and checksums
    enc = sa_of(c).encrypt(plain)
    return bytes(enc).hex() + " " + bytes(plain).hex()


def main():
    mode = sys.argv[1]
    cases = json.load(sys.stdin)
    bad = 0
    for c in cases:
        try:
            if mode == "check":
                why = check(c)
                if why is None:
                    print("OK", c["name"])
                else:
                    bad += 1
                    print("FAIL", c["name"], why)
            else:
                print("OK", c["name"], build(c))
        except Exception as e:  # noqa: BLE001 - report every failure per case
            bad += 1
            print("FAIL", c["name"], type(e).__name__, str(e).replace("\n", " "))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
