"""``procpool serve``: arguments, checks, the listening socket, then one of the models."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Callable
from typing import Any

from procpool import cpu_count
from procpool._cli import CommandError
from procpool._cli.serve.board import MAX_WORKERS
from procpool._cli.serve.connection import Limits, set_timeouts
from procpool._cli.serve.handlers import HandlerError, load_function, load_handler

DEFAULT_BIND = "127.0.0.1:8081"  # the tutorial's
DEFAULT_THREADS = 8

SERVE_EPILOG = """\
protocol:
  Newline-delimited bytes in, bytes out: every line gets one reply line, in order.
  A line may end in \\n or \\r\\n and hold any bytes. upper replies with bytes.upper()
  (ASCII letters only, so no input can fail), echo with the line itself, and
  MODULE:FUNCTION with what FUNCTION(line: bytes) returns (bytes, or str sent as
  UTF-8, or None for no reply; the line comes without its line end). A half-closed
  connection gets its replies, then EOF. A handler that raises closes that connection
  only; the worker goes on.

models:
  prefork (default): each worker accepts on the listening socket it inherited, as
  gunicorn and nginx do; --threads connections at once per worker.
  dispatch: the tutorial's; this process accepts and hands each connection to a
  procpool Pool worker; it stops accepting while workers + --queue are busy.

signals:
  SIGTERM, SIGINT (Ctrl-C): stop accepting, answer the lines already read, exit within
  --graceful-timeout (a second one: at once). SIGHUP: replace the workers one by one,
  refusing no connection. SIGTTIN, SIGTTOU: one worker more, one fewer.
  If this process is killed, even with kill -9, its workers exit and free the port.

output:
  "listening on HOST:PORT" on stdout once the socket listens; then one line a
  connection on stderr (peer, lines, bytes in and out, duration, why it closed).

examples:
  procpool serve                                   # 127.0.0.1:8081, upper-cases lines
  procpool serve --bind 127.0.0.1:0 --workers 4    # any free port; printed on stdout
  procpool serve --handler mymod:reply --threads 8 --idle-timeout 30
  procpool serve --mode dispatch --queue 8
  echo hello | procpool client 127.0.0.1:8081

exit status:
  0 stopped by a signal, 1 the workers keep dying at start, 2 usage error or an address
  that cannot be used.
"""


def add_serve(subparsers: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    p = subparsers.add_parser(
        "serve", help="a pooled TCP line server (the tutorial's echo-upper server)",
        description="Serve newline-delimited requests with a pool of worker processes.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT",
                   help=f"address to listen on; port 0 picks a free one (default {DEFAULT_BIND})")
    p.add_argument("--mode", choices=("prefork", "dispatch"), default="prefork")
    p.add_argument("--workers", "-w", type=_positive, default=None, metavar="N",
                   help="worker processes (default: the number of CPUs)")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="connections served at once per prefork worker (default 8)")
    # (dest: the dispatcher's "handler" is the subcommand's function)
    p.add_argument("--handler", dest="line_handler", default="upper",
                   metavar="upper|echo|MODULE:FUNCTION", help="what replies (default upper)")
    p.add_argument("--worker-init", default=None, metavar="MODULE:FUNCTION",
                   help="called with no arguments in each worker as it starts")
    p.add_argument("--queue", type=_count, default=0, metavar="N",
                   help="dispatch: connections accepted beyond the busy workers (default 0)")
    p.add_argument("--max-connections", type=_positive, default=None, metavar="N",
                   help="beyond N connections in service (prefork: at most workers x "
                   "threads), clients get 'ERR busy' at once (default: they wait)")
    p.add_argument("--max-line", type=_positive, default=65536, metavar="BYTES",
                   help="a longer line gets 'ERR line too long' and the connection closes")
    p.add_argument("--idle-timeout", type=_seconds, default=60.0, metavar="S",
                   help="close a connection that sends nothing for S seconds (0: never)")
    p.add_argument("--write-timeout", type=_seconds, default=10.0, metavar="S",
                   help="close a connection that reads no reply for S seconds (0: never)")
    p.add_argument("--handler-timeout", type=_seconds, default=0.0, metavar="S",
                   help="replace a worker whose handler runs longer (0: never)")
    p.add_argument("--graceful-timeout", type=_seconds, default=10.0, metavar="S")
    p.add_argument("--max-requests", type=_count, default=0, metavar="N",
                   help="replace a worker after N connections (0: never)")
    p.add_argument("--max-requests-jitter", type=_count, default=0, metavar="N",
                   help="prefork: add a random 0..N to each worker's --max-requests")
    p.add_argument("--backlog", type=_positive, default=1024)
    p.add_argument("--quiet", "-q", action="store_true", help="no line per connection")
    p.set_defaults(handler=handler)


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


def parse_address(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise CommandError(f"{option} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8081")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def listen(text: str, backlog: int, limits: Limits) -> socket.socket:
    """A listening socket for ``--bind``, or a CommandError that says what to do."""
    host, port = parse_address(text, "--bind")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CommandError(f"--bind {text!r}: unknown host {host!r} ({exc.strerror})")
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; another server has it: stop it, or pick another port (0 for any free one)"
        elif exc.errno == errno.EACCES:
            hint = "; ports below 1024 need privileges: pick a higher one"
        raise CommandError(f"cannot listen on {text}: {exc.strerror}{hint}")
    set_timeouts(sock, limits)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    from procpool._cli.serve.dispatch import DispatchPlan, DispatchServer
    from procpool._cli.serve.supervisor import Plan, Supervisor
    from procpool._cli.serve.worker import WorkerSetup

    workers = args.workers or cpu_count()
    _check(args, workers)
    try:
        handler = load_handler(args.line_handler)
        init = load_function(args.worker_init, "--worker-init") if args.worker_init else None
    except HandlerError as exc:
        raise CommandError(str(exc))
    limits = Limits(args.max_line, args.idle_timeout or None, args.write_timeout or None)
    listener = listen(args.bind, args.backlog, limits)
    host, port = listener.getsockname()[:2]
    print(f"listening on {_show(host)}:{port}", flush=True)
    with listener:
        if args.mode == "dispatch":
            plan = DispatchPlan(
                args.line_handler, args.worker_init, limits, workers, args.queue,
                args.max_connections, args.max_requests, args.handler_timeout or None,
                args.graceful_timeout, not args.quiet,
            )  # fmt: skip
            return DispatchServer(listener, plan).run()
        listener.setblocking(False)  # shared by every worker: see worker.py
        threads = args.threads or DEFAULT_THREADS
        setup = WorkerSetup(
            listener, handler, limits, threads, args.handler_timeout or None,
            args.graceful_timeout, not args.quiet, init, args.max_connections is not None,
        )  # fmt: skip
        prefork = Plan(workers, args.max_connections, args.max_requests,
                       args.max_requests_jitter)  # fmt: skip
        return Supervisor(setup, prefork).run()


def _check(args: argparse.Namespace, workers: int) -> None:
    if workers > MAX_WORKERS:
        raise CommandError(f"--workers {workers}: at most {MAX_WORKERS}")
    if args.mode == "dispatch" and args.threads is not None:
        raise CommandError("--threads applies to --mode prefork (a dispatch worker serves "
                           "one connection at a time: raise --workers instead)")
    if args.mode == "prefork" and args.queue:
        raise CommandError("--queue applies to --mode dispatch (prefork clients wait in "
                           "the listen backlog: see --backlog)")


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host

