#!/usr/bin/env python3
"""Attack and traffic helper for tests/boundary.rs and tests/flowcache.rs.

send KIND ADDR       one packet of KIND (icmp, udplite, raw, sctp, dccp; v4
                     or v6 from ADDR) to ADDR; prints SENT or ERROR ...
listen PROTO ADDR PORT   serve: TCP accepts and writes HI, UDP echoes; READY
probe PROTO ADDR PORT    connect/send; prints REPLY ... or TIMEOUT/ERROR
flow ADDR PORT COUNT INTERVAL   COUNT UDP datagrams from one socket (one
                     flow), INTERVAL seconds apart; prints DONE sent
bindtodevice PROTO ADDR PORT DEV   TCP connect / UDP send from a socket
                     bound to DEV (SO_BINDTODEVICE, unprivileged)
bcast ADDR PORT      one UDP datagram with SO_BROADCAST (broadcast,
                     multicast, link-local; ADDR may carry %scope)
freebind FAKE LOCAL PORT   IPv6: a socket on LOCAL gets a datagram that a
                     freebind socket sent from FAKE:PORT, then answers it
await-answer ADDR PORT     wait for one datagram on ADDR:PORT and answer it
transparent-send SRC SPORT DST DPORT   one datagram from SRC:SPORT (not
                     this host's) to DST:DPORT (IP_TRANSPARENT, root)
tcpflag FLAGS ADDR PORT    one bare TCP segment (raw socket, root) with
                     FLAGS (fin, rst) and no connection: conntrack calls it
                     invalid
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


def udp_to(addr, port):
    """A UDP socket and the address tuple for ADDR[%scope]:PORT."""
    info = socket.getaddrinfo(addr, port, family(addr.split("%")[0]), socket.SOCK_DGRAM)[0]
    return socket.socket(info[0], socket.SOCK_DGRAM), info[4]


def attempt(action):
    """Run ACTION; print SENT, TIMEOUT or ERROR and why."""
    try:
        action()
        print("SENT", flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    except OSError as e:
        print("ERROR", e, flush=True)


def bindtodevice(proto, addr, port, dev):
    def go():
        s = socket.socket(family(addr), socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        s.settimeout(1.0)
        if proto == "tcp":
            s.connect((addr, port))
        else:
            s.sendto(b"bound-to-device", (addr, port))

    attempt(go)


def bcast(addr, port):
    def go():
        s, to = udp_to(addr, port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(b"broadcast", to)

    attempt(go)


def freebind(fake, local, port):
    def go():
        a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        a.bind((local, 0))
        a.settimeout(1.0)
        b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        b.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
        b.bind((fake, port))
        b.sendto(b"forged", (local, a.getsockname()[1]))
        a.recvfrom(100)
        a.sendto(b"answer", (fake, port))

    attempt(go)


def await_answer(addr, port):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("READY", flush=True)
    _, peer = s.recvfrom(100)
    attempt(lambda: s.sendto(b"answer", peer))


def transparent_send(src, sport, dst, dport):
    fam = family(src)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)  # IPV6_TRANSPARENT
    else:
        s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
    s.bind((src, sport))
    s.sendto(b"full-cone", (dst, dport))
    print("SENT", flush=True)


def tcpflag(flags, addr, port):
    bits = {"fin": 0x11, "rst": 0x04}[flags]
    s = socket.socket(family(addr), socket.SOCK_RAW, socket.IPPROTO_TCP)
    segment = struct.pack("!HHIIBBHHH", 40000, port, 12345, 0, 5 << 4, bits, 1024, 0, 0)
    attempt(lambda: s.sendto(segment + b"cgtproxy-invalid", (addr, 0)))


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
    elif cmd == "bindtodevice":
        bindtodevice(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif cmd == "bcast":
        bcast(sys.argv[2], int(sys.argv[3]))
    elif cmd == "freebind":
        freebind(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "await-answer":
        await_answer(sys.argv[2], int(sys.argv[3]))
    elif cmd == "tcpflag":
        tcpflag(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "transparent-send":
        transparent_send(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
