#!/usr/bin/env python3
"""Test hosts for cgtproxy's data-plane tests (run inside test namespaces).

  serve NAME PORT...      TCP and UDP on 0.0.0.0 and :: ; answers "NAME <token>",
                          logs "HIT NAME <proto> <token>"
  tproxy PORT...          IP_TRANSPARENT TCP and UDP listeners on 0.0.0.0 and :: ;
                          answers "TPROXY <port> <original destination>"
  dns ADDR PORT           DNS stand-in, UDP and TCP; answers "DNS <token>"
  race PARENT COUNT ADDR PORT [tcp]
                          COUNT times: make cgroup PARENT/leak-I, fork a child into
                          it that at once sends one UDP datagram to ADDR:PORT (what a
                          service manager starting an app does), or with tcp connects
                          and prints "T <milliseconds>"; prints "RACED COUNT"
  cps ADDR PORT COUNT     COUNT TCP connections (connect, send, answer, close);
                          prints connections per second
  dnsq ADDR PORT NAME [tcp]
                          one DNS A query; prints "ANSWER <addresses>"
  sink PORT [transparent] TCP on 0.0.0.0: reads each connection to its end, answers
                          "BYTES <n>"; transparent: an IP_TRANSPARENT (TPROXY) listener
  bulk ADDR PORT MB       sends MB MiB over one TCP connection; prints MiB/s
  ping ADDR [TIMEOUT]     one ICMP echo (IPv4, raw socket); prints PONG or TIMEOUT
  client PROTO ADDR PORT TOKEN [TIMEOUT]
                          PROTO tcp, udp, or udpc (a connected UDP socket);
                          sends TOKEN, prints the answer, or TIMEOUT / ERROR <reason>

Servers print READY once listening. Every answer is one line of text.
"""
import selectors
import socket
import struct
import sys

IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IPV6_RECVORIGDSTADDR = 74
IPV6_TRANSPARENT = 75


def log(*args):
    print(*args, flush=True)


def listeners(ports, transparent=False, addrs=(("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6))):
    socks = []
    for port in ports:
        for addr, fam in addrs:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(fam, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if transparent:
                    if fam == socket.AF_INET:
                        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                        if kind == socket.SOCK_DGRAM:
                            s.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
                    else:
                        s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                        if kind == socket.SOCK_DGRAM:
                            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
                s.bind((addr, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(64)
                socks.append((s, port))
    return socks


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def orig_dst(ancdata, fam):
    for level, ctype, data in ancdata:
        if level == socket.SOL_IP and ctype == IP_RECVORIGDSTADDR:
            port = struct.unpack("!H", data[2:4])[0]
            return (socket.inet_ntop(socket.AF_INET, data[4:8]), port)
        if level == socket.IPPROTO_IPV6 and ctype == IPV6_RECVORIGDSTADDR:
            port = struct.unpack("!H", data[2:4])[0]
            return (socket.inet_ntop(socket.AF_INET6, data[8:24]), port)
    return None


def serve(name, socks, transparent=False):
    sel = selectors.DefaultSelector()
    for s, port in socks:
        sel.register(s, selectors.EVENT_READ, port)
    log("READY")
    while True:
        for key, _ in sel.select():
            s, port = key.fileobj, key.data
            if s.type == socket.SOCK_STREAM:
                conn, peer = s.accept()
                conn.settimeout(2)
                try:
                    token = conn.recv(256).decode(errors="replace").strip()
                    where = fmt(conn.getsockname())
                    answer = f"TPROXY {port} {where}" if transparent else f"{name} {token}"
                    log("HIT", name, "tcp", where, token)
                    conn.sendall((answer + "\n").encode())
                except OSError as e:
                    log("ERR", e)
                finally:
                    conn.close()
            else:
                data, anc, _, peer = s.recvmsg(256, 256)
                token = data.decode(errors="replace").strip()
                if transparent:
                    dst = orig_dst(anc, s.family)
                    where = fmt(dst) if dst else "?"
                    log("HIT", name, "udp", where, token)
                    # Answer from the original destination, as a proxy does.
                    r = socket.socket(s.family, socket.SOCK_DGRAM)
                    if s.family == socket.AF_INET:
                        r.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                    else:
                        r.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                    r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    r.bind(dst)
                    r.sendto(f"TPROXY {port} {where}\n".encode(), peer)
                    r.close()
                else:
                    log("HIT", name, "udp", fmt(s.getsockname()), token)
                    s.sendto(f"{name} {token}\n".encode(), peer)


def client(proto, addr, port, token, timeout=2.0):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        if proto == "tcp":
            s = socket.create_connection((addr, port), timeout=timeout)
            s.sendall((token + "\n").encode())
            print(s.recv(256).decode().strip() or "EMPTY")
        elif proto == "udpc":
            # A connected UDP socket, as resolvers use: ICMP errors reach it.
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.connect((addr, port))
            s.send((token + "\n").encode())
            print(s.recv(256).decode().strip())
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto((token + "\n").encode(), (addr, port))
            print(s.recv(256).decode().strip())
    except socket.timeout:
        print("TIMEOUT")
    except OSError as e:
        print("ERROR", e.strerror or e)


def dnsq(addr, port, name, proto="udp", timeout=2.0):
    """One A query; prints the addresses of the answer, or TIMEOUT / ERROR."""
    import random
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    try:
        if proto == "tcp":
            s = socket.create_connection((addr, port), timeout=timeout)
            s.sendall(struct.pack("!H", len(q)) + q)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            r = data[2:]
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(q, (addr, port))
            r = s.recv(4096)
        ancount = struct.unpack("!H", r[6:8])[0]
        off = len(q)
        out = []
        for _ in range(ancount):
            off += 2 if r[off] & 0xC0 == 0xC0 else r.index(b"\0", off) + 1 - off
            rtype, _, _, rdlen = struct.unpack("!HHIH", r[off:off + 10])
            off += 10
            if rtype == 1:
                out.append(socket.inet_ntop(socket.AF_INET, r[off:off + 4]))
            off += rdlen
        print("ANSWER", " ".join(out) or "NONE")
    except socket.timeout:
        print("TIMEOUT")
    except OSError as e:
        print("ERROR", e.strerror or e)


def race(parent, count, addr, port, proto="udp"):
    import os
    import time
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    dirs = []
    for i in range(count):
        d = os.path.join(parent, f"leak-{i}")
        os.mkdir(d)
        dirs.append(d)
        pid = os.fork()
        if pid == 0:
            try:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                if proto == "tcp":
                    start = time.monotonic()
                    c = socket.create_connection((addr, port), timeout=5)
                    print(f"T {(time.monotonic() - start) * 1000:.3f}", flush=True)
                    c.close()
                else:
                    s = socket.socket(fam, socket.SOCK_DGRAM)
                    s.sendto(f"leak {i}".encode(), (addr, port))
            except OSError:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
    for d in dirs:
        for _ in range(200):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.01)
    print("RACED", count, flush=True)


def cps(addr, port, count):
    import time
    start = time.monotonic()
    for _ in range(count):
        s = socket.create_connection((addr, port), timeout=2)
        s.sendall(b"cps\n")
        s.recv(256)
        s.close()
    print(f"CPS {count / (time.monotonic() - start):.0f}", flush=True)


def sink(port, transparent=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    log("READY")
    while True:
        conn, _ = s.accept()
        total = 0
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            total += len(data)
        conn.sendall(f"BYTES {total}\n".encode())
        conn.close()


def bulk(addr, port, mib):
    import time
    chunk = b"x" * (1 << 16)
    start = time.monotonic()
    s = socket.create_connection((addr, port), timeout=10)
    for _ in range(mib * 16):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    answer = s.recv(256).decode().strip()
    elapsed = time.monotonic() - start
    print(f"MIBS {mib / elapsed:.0f} {answer}", flush=True)


def ping(addr, timeout=1.5):
    import os
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"cgtproxy"
    csum = sum(struct.unpack("!%dH" % (len(body) // 2), body))
    csum = (csum >> 16) + (csum & 0xFFFF)
    csum = ~(csum + (csum >> 16)) & 0xFFFF
    s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (addr, 0))
    try:
        while True:
            data, peer = s.recvfrom(256)
            icmp = data[(data[0] & 0x0F) * 4:]
            if peer[0] == addr and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                print("PONG")
                return
    except socket.timeout:
        print("TIMEOUT")


def main(argv):
    mode = argv[1]
    if mode == "serve":
        serve(argv[2], listeners([int(p) for p in argv[3:]]))
    elif mode == "tproxy":
        serve("TPROXY", listeners([int(p) for p in argv[2:]], transparent=True), transparent=True)
    elif mode == "dns":
        addr, port = argv[2], int(argv[3])
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        serve("DNS", listeners([port], addrs=((addr, fam),)))
    elif mode == "cps":
        cps(argv[2], int(argv[3]), int(argv[4]))
    elif mode == "sink":
        sink(int(argv[2]), len(argv) > 3 and argv[3] == "transparent")
    elif mode == "bulk":
        bulk(argv[2], int(argv[3]), int(argv[4]))
    elif mode == "ping":
        ping(argv[2], *(float(t) for t in argv[3:4]))
    elif mode == "race":
        race(argv[2], int(argv[3]), argv[4], int(argv[5]), *(argv[6:7]))
    elif mode == "dnsq":
        dnsq(argv[2], int(argv[3]), argv[4], *(argv[5:6]))
    elif mode == "client":
        timeout = float(argv[6]) if len(argv) > 6 else 2.0
        client(argv[2], argv[3], int(argv[4]), argv[5], timeout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
