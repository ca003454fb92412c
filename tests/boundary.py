#!/usr/bin/env python3
"""Attack and traffic helper for tests/boundary.rs and tests/flowcache.rs.

send KIND ADDR       one packet of KIND (icmp, udplite, raw, sctp, dccp; v4
                     or v6 from ADDR) to ADDR; prints SENT or ERROR ...
listen PROTO ADDR PORT   serve: TCP accepts and writes HI, UDP echoes; READY
probe PROTO ADDR PORT    connect/send; prints REPLY ... or TIMEOUT/ERROR
flow ADDR PORT COUNT INTERVAL   COUNT UDP datagrams from one socket (one
                     flow), INTERVAL seconds apart; prints DONE sent
"""
import socket
import struct
import sys
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def send(kind, addr):
    fam = family(addr)
    v6 = fam == socket.AF_INET6
    try:
        if kind == "icmp":
            # An unprivileged ping socket (net.ipv4.ping_group_range).
            proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
            s = socket.socket(fam, socket.SOCK_DGRAM, proto)
            typ = 128 if v6 else 8
            s.sendto(struct.pack("!BBHHH", typ, 0, 0, 0, 1) + b"cgtproxy", (addr, 0))
        elif kind == "udplite":
            s = socket.socket(fam, socket.SOCK_DGRAM, 136)
            s.sendto(b"cgtproxy", (addr, 9998))
        else:
            proto = {"raw": 253, "sctp": 132, "dccp": 33}[kind]
            s = socket.socket(fam, socket.SOCK_RAW, proto)
            s.sendto(b"cgtproxy-raw-payload", (addr, 0))
        print("SENT", flush=True)
    except OSError as e:
        print("ERROR", e, flush=True)


def listen(proto, addr, port):
    fam = family(addr)
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)
        print("READY", flush=True)
        while True:
            c, _ = s.accept()
            try:
                c.sendall(b"HI\n")
            except OSError:
                pass
            c.close()
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("READY", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        try:
            s.sendto(b"HI " + data, peer)
        except OSError:
            pass


def probe(proto, addr, port, timeout=1.5):
    fam = family(addr)
    try:
        if proto == "tcp":
            s = socket.create_connection((addr, port), timeout=timeout)
            s.settimeout(timeout)
            print("REPLY", s.recv(100).decode().strip(), flush=True)
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(b"probe", (addr, port))
            print("REPLY", s.recvfrom(100)[0].decode().strip(), flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    except OSError as e:
        print("ERROR", e, flush=True)


def flow(addr, port, count, interval):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    sent = 0
    print("START", flush=True)
    for i in range(count):
        try:
            s.sendto(b"flow %d" % i, (addr, port))
            sent += 1
        except OSError:
            pass
        time.sleep(interval)
    print("DONE", sent, flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], sys.argv[3])
    elif cmd == "listen":
        listen(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "probe":
        probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "flow":
        flow(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
