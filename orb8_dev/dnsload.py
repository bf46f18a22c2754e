"""A tiny DNS server and client for the DNS probe's tests (run inside test namespaces).

``server --bind IP [--port 53]``: answers UDP and TCP. Names under ``nx.``
get NXDOMAIN, under ``fail.`` SERVFAIL, under ``drop.`` no answer at all;
the rest NOERROR (with an A record for A questions). Anything it cannot
parse is ignored. It prints ``{"listening": ...}`` once ready and runs until
killed.

``client --server IP --plan JSON``: sends each planned query, one at a time,
waits for its answer (or a timeout), and prints one JSON line: the log of
what it sent and what it got back, the oracle the tests compare with.

``raw --server IP --hex HEX ...``: sends each payload as one UDP datagram to
port 53 and prints how many it sent.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import socketserver
import struct
import sys
import threading
from typing import Any

from orb8_dev import dnswire


def _reply_for(request: bytes) -> bytes | None:
    try:
        end = dnswire.question_end(request)
        name = request[12 : end - 4]
    except IndexError:
        return None
    # only well-formed single questions get an answer (so a broken query never
    # causes an answer the tests would have to account for)
    if len(request) < end or request[2] & 0x80 or request[4:6] != b"\x00\x01":
        return None
    labels = []
    pos = 0
    while name[pos]:
        if name[pos] > 63:
            return None
        labels.append(name[pos + 1 : pos + 1 + name[pos]].decode(errors="replace").lower())
        pos += name[pos] + 1
    if labels and labels[-1] == "drop":
        return None
    rcode = 0
    if labels and labels[-1] == "nx":
        rcode = 3
    elif labels and labels[-1] == "fail":
        rcode = 2
    return dnswire.answer(request=request, rcode=rcode)


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = _reply_for(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn = self.request
        while True:
            head = _recv_exact(conn, 2)
            if head is None:
                return
            data = _recv_exact(conn, struct.unpack("!H", head)[0])
            if data is None:
                return
            reply = _reply_for(data)
            if reply is not None:
                conn.sendall(dnswire.tcp_frame(reply))


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def serve(*, bind: str, port: int) -> None:
    family = _family(bind)

    class Udp(socketserver.ThreadingUDPServer):
        address_family = family
        allow_reuse_address = True

    class Tcp(socketserver.ThreadingTCPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True

    udp, tcp = Udp((bind, port), _Udp), Tcp((bind, port), _Tcp)
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"listening": [bind, port]}), flush=True)
    threading.Event().wait()


def client(
    *, server: str, port: int, plan: list[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    """Each plan item: {name, qtype, tcp?}. Returns one log entry per query."""
    family = _family(server)
    log: list[dict[str, Any]] = []
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.settimeout(timeout)
    udp.connect((server, port))
    src_ip, src_port = udp.getsockname()[:2]
    for item in plan:
        ident = secrets.randbelow(65536)
        qtype = dnswire.QTYPE_NUMBERS[item["qtype"]]
        message = dnswire.query(ident=ident, name=item["name"], qtype=qtype)
        entry: dict[str, Any] = {
            "name": item["name"], "qtype": item["qtype"], "id": ident,
            "tcp": bool(item.get("tcp")), "rcode": None,
        }  # fmt: skip
        if item.get("tcp"):
            with socket.create_connection((server, port), timeout=timeout) as conn:
                entry["src"] = list(conn.getsockname()[:2])
                conn.sendall(dnswire.tcp_frame(message))
                head = _recv_exact(conn, 2)
                reply = _recv_exact(conn, struct.unpack("!H", head)[0]) if head else None
        else:
            entry["src"] = [src_ip, src_port]
            udp.send(message)
            reply = None
            try:
                while True:
                    data = udp.recv(4096)
                    if data[:2] == message[:2]:
                        reply = data
                        break
            except TimeoutError:
                pass
        if reply is not None:
            entry["rcode"] = reply[3] & 0x0F
        log.append(entry)
    udp.close()
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orb8_dev.dnsload")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=53)
    c = sub.add_parser("client")
    c.add_argument("--server", required=True)
    c.add_argument("--port", type=int, default=53)
    c.add_argument("--plan", required=True, help="JSON list of {name, qtype, tcp}")
    c.add_argument("--timeout", type=float, default=0.5)
    r = sub.add_parser("raw")
    r.add_argument("--server", required=True)
    r.add_argument("--port", type=int, default=53)
    r.add_argument("--hex", nargs="+", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "server":
        serve(bind=args.bind, port=args.port)
    elif args.cmd == "client":
        log = client(server=args.server, port=args.port, plan=json.loads(args.plan),
                     timeout=args.timeout)  # fmt: skip
        print(json.dumps({"log": log}))
    else:
        with socket.socket(_family(args.server), socket.SOCK_DGRAM) as sock:
            for payload in args.hex:
                sock.sendto(bytes.fromhex(payload), (args.server, args.port))
        print(json.dumps({"sent": len(args.hex)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
