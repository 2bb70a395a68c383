"""``procpool client HOST:PORT``: send stdin's lines, print the replies.

One thread copies stdin to the socket and half-closes it (``shutdown(SHUT_WR)``) at
end of input; the main thread copies the socket to stdout until the server's EOF, so
every reply to every line sent is printed, pipelined or not. Bytes pass unchanged.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from typing import Any

from procpool._cli.serve.command import parse_address

CLIENT_EPILOG = """\
examples:
  echo hello | procpool client 127.0.0.1:8081          # prints HELLO
  procpool client 127.0.0.1:8081 < requests.txt > replies.txt
  procpool client 127.0.0.1:8081                        # type lines; Ctrl-D to end

exit status:
  0 the server answered and closed after our end of input, 1 the connection failed or
  was reset, 2 usage error.
"""


def add_client(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "client", help="send lines to a line server and print its replies",
        description="Send stdin to HOST:PORT line by line; print what comes back.",
        epilog=CLIENT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    p.set_defaults(handler=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    host, port = parse_address(args.address, "address")
    try:
        sock = socket.create_connection((host, port), timeout=args.connect_timeout)
    except OSError as exc:
        print(f"procpool client: cannot connect to {args.address}: "
              f"{exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return 1
    sock.settimeout(None)
    with sock:
        failures: list[str] = []
        sender = threading.Thread(target=_send_stdin, args=(sock, failures), daemon=True)
        sender.start()
        received = _print_replies(sock, failures)
        sender.join(0 if failures else None)
    if failures:
        print(f"procpool client: {failures[0]}", file=sys.stderr)
        return 1
    return 0 if received is not None else 1


def _send_stdin(sock: socket.socket, failures: list[str]) -> None:
    stdin = sys.stdin.buffer
    try:
        for line in iter(stdin.readline, b""):
            sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        failures.append(f"sending failed: {exc.strerror or exc}")
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wake the reader
        except OSError:
            pass


def _print_replies(sock: socket.socket, failures: list[str]) -> int | None:
    out = sys.stdout.buffer
    total = 0
    interactive = os.isatty(sys.stdout.fileno())
    while True:
        try:
            data = sock.recv(65536)
        except OSError as exc:
            if not failures:
                failures.append(f"connection lost: {exc.strerror or exc}")
            return None
        if not data:
            out.flush()
            return total
        total += len(data)
        out.write(data)
        if interactive:
            out.flush()
