"""The tutorial's examples, run as a user runs them, with either import.

The tutorial (a Chinese introduction to ``multiprocessing.Pool``: apply, apply_async,
a pooled echo server, a crawler with callbacks) promises that its examples work
with procpool after changing one line::

    from multiprocessing import Pool   ->   from procpool import Pool

Each test writes an example to a script, verbatim except for that import, shorter
sleeps (0.05 s for 2-3 s), a fixed number of connections for the server, and URLs
that point at a local HTTP server; runs it with ``python script.py``; and checks its
output. Every example runs under both imports and must give the same observable
output, up to the pids and the interleaving of the processes' lines.
"""

from __future__ import annotations

import ast
import http.server
import multiprocessing
import multiprocessing.pool
import os
import re
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import procpool
from compat_funcs import barrier_pid

#: Deadlock detector for a script run: far longer than any example takes.
SCRIPT_TIMEOUT = 60.0

IMPORTS = {
    "multiprocessing": "from multiprocessing import Pool",
    "procpool": "from procpool import Pool",
}
POOLS: dict[str, Callable[..., Any]] = {
    "multiprocessing": multiprocessing.pool.Pool,
    "procpool": procpool.Pool,
}

both_imports = pytest.mark.parametrize("impl", sorted(IMPORTS))


def write_example(tmp_path: Path, source: str, impl: str) -> Path:
    """The example with its ``Pool`` import taken from ``impl``, as a script file."""
    script, count = re.subn(
        r"^from\s+multiprocessing\s+import\s+Pool$", IMPORTS[impl], source, flags=re.M
    )
    assert count == 1, "the example must import Pool from multiprocessing exactly once"
    path = tmp_path / f"example_{impl}.py"
    path.write_text(script, encoding="utf-8")
    return path


def script_env() -> dict[str, str]:
    """The environment a script runs in: UTF-8 output, no proxy for 127.0.0.1.

    Without PYTHONUNBUFFERED, as for most users: unbuffered, ``print`` writes the text
    and the newline apart, and lines of concurrent workers splice into each other.
    """
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def run_example(path: Path) -> list[str]:
    """Run a script to its end; its stdout lines (it must exit 0, silent on stderr)."""
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        encoding="utf-8",
        timeout=SCRIPT_TIMEOUT,
        cwd=path.parent,
        env=script_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


# ------------------------------------------------------------------ (a) apply


APPLY_IN_A_LOOP = """\
from multiprocessing import Pool
import os,time
def task(n):
    print('[%s] is running'%os.getpid())
    time.sleep(0.05)
    print('[%s] is done'%os.getpid())
    return n**2
if __name__ == '__main__':
    # print(os.cpu_count())  #查看cpu个数
    p = Pool(4) #最大四个进程
    for i in range(1,7):#开7个任务
        res = p.apply(task,args=(i,))  #同步的,等着一个运行完才执行另一个
        print('本次任务的结束:%s'%res)
    p.close()#禁止往进程池内在添加任务
    p.join() #在等进程池
    print('主')
"""


@both_imports
def test_apply_in_a_loop(impl: str, tmp_path: Path) -> None:
    """应用1: ``apply`` is synchronous: six tasks, one after the other, in order."""
    lines = run_example(write_example(tmp_path, APPLY_IN_A_LOOP, impl))
    parent = [line for line in lines if not line.startswith("[")]
    assert parent == [f"本次任务的结束:{i * i}" for i in range(1, 7)] + ["主"]

    steps = [re.fullmatch(r"\[(\d+)\] is (running|done)", line) for line in lines]
    worker_steps = [m for m in steps if m]
    assert len(worker_steps) == 12
    by_pid: dict[str, list[str]] = {}
    for m in worker_steps:
        by_pid.setdefault(m[1], []).append(m[2])
    assert 1 <= len(by_pid) <= 4
    for seq in by_pid.values():  # never two tasks at once in one worker
        assert seq == ["running", "done"] * (len(seq) // 2)


# --------------------------------------------------------- (b) apply_async + get


APPLY_ASYNC_THEN_GET = """\
from multiprocessing import Pool
import os,time
def walk(n):
    print('task[%s] running...'%os.getpid())
    time.sleep(0.05)
    return n**2
if __name__ == '__main__':
     p = Pool(4)
     res_obj_l = []
     for i in range(10):
         res = p.apply_async(walk,args=(i,))
         # print(res)  #打印出来的是对象
         res_obj_l.append(res)  #那么现在拿到的是一个列表,怎么得到值呢?我们用个.get方法
     p.close() #禁止往进程池里添加任务
     p.join()
     # print(res_obj_l)
     print([obj.get() for obj in res_obj_l])  #这样就得到了
"""


@both_imports
def test_apply_async_then_get(impl: str, tmp_path: Path) -> None:
    """``apply_async`` ten times, close, join, then ``get`` each result."""
    lines = run_example(write_example(tmp_path, APPLY_ASYNC_THEN_GET, impl))
    running = [line for line in lines if re.fullmatch(r"task\[\d+\] running\.\.\.", line)]
    assert len(running) == 10
    assert [line for line in lines if line not in running] == [str([i * i for i in range(10)])]


# ------------------------------------------------------------ (c) echo server


ECHO_SERVER = """\
from socket import *
from multiprocessing import Pool
s = socket(AF_INET,SOCK_STREAM)
s.setsockopt(SOL_SOCKET,SO_REUSEADDR,1) #端口重用
s.bind(('127.0.0.1',0))
s.listen(5)
print('start running...')
print('port', s.getsockname()[1], flush=True)
def talk(coon,addr):
    while True:  # 通信循环
        try:
            cmd = coon.recv(1024)
            print(cmd.decode('utf-8'))
            if not cmd: break
            coon.send(cmd.upper())
            print('发送的是%s'%cmd.upper().decode('utf-8'))
        except Exception:
            break
    coon.close()
if __name__ == '__main__':
    p = Pool(4)
    for _ in range(3):#链接循环
        coon,addr = s.accept()
        print(coon,addr)
        p.apply_async(talk,args=(coon,addr))
    p.close()
    p.join()
    s.close()
"""

CLIENTS = 3
WORDS = ["hello", "pool", "你好 world"]


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _talk_to_server(port: int) -> list[bytes]:
    """Connect every client first, then take turns: each must be served at once."""
    clients = [
        socket.create_connection(("127.0.0.1", port), timeout=SCRIPT_TIMEOUT / 4)
        for _ in range(CLIENTS)
    ]
    try:
        echoes = []
        for word in WORDS:
            for i, client in enumerate(clients):
                message = f"{word} {i}".encode()
                client.sendall(message)
                echoes.append(_recv_exactly(client, len(message.upper())))
        return echoes
    finally:
        for client in clients:
            client.close()


@both_imports
def test_pooled_echo_server(impl: str, tmp_path: Path) -> None:
    """应用2: the server hands each accepted socket to ``p.apply_async(talk, ...)``;
    three clients connected at the same time are all answered.

    Changed from the tutorial: port 0 (printed for the test) instead of 8081, and
    three connections then ``close``/``join`` instead of an endless accept loop.
    """
    script = write_example(tmp_path, ECHO_SERVER, impl)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: readline() must not read ahead of communicate()
        cwd=tmp_path,
        env=script_env(),
    )
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline().decode(), proc.stdout.readline().decode()]
        assert head[0] == "start running...\n"
        port = int(head[1].split()[1])
        echoes = _talk_to_server(port)
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert err == b""

    expected = [f"{word} {i}".upper().encode() for word in WORDS for i in range(CLIENTS)]
    assert echoes == expected
    lines = out.decode("utf-8").splitlines()
    accepted = [line for line in lines if line.startswith("<socket.socket")]
    assert len(accepted) == CLIENTS
    assert all(re.search(r"\('127\.0\.0\.1', \d+\)$", line) for line in accepted)
    received = Counter(f"{word} {i}" for word in WORDS for i in range(CLIENTS))
    sent = Counter(f"发送的是{word} {i}".upper() for word in WORDS for i in range(CLIENTS))
    # Each talk() also prints the empty message that ends its connection.
    assert Counter(line for line in lines if line not in accepted) == (
        received + sent + Counter({"": CLIENTS})
    )


# ------------------------------------------------------------- (d), (e) crawler


PAGES = [
    "www.baidu.com",
    "www.openstack.org",
    "www.python.org",
    "help.github.com",
    "www.sina.com.cn",
]


def page_body(page: str) -> str:
    """What the local web server answers for ``/page``: a different size per page."""
    return "<html>" + page * (len(page) % 7 + 3) + "</html>"


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = page_body(self.path.lstrip("/")).encode("ascii")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=ascii")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


class _WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins the request threads


@pytest.fixture
def web() -> Iterator[str]:
    """A web server on 127.0.0.1 (a free port) serving ``page_body``; its base URL."""
    server = _WebServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, name="tutorial-web")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _with_urls(source: str, base: str) -> str:
    urls = "".join(f"        '{base}/{page}',\n" for page in PAGES)
    return source.replace("{URLS}", urls)


CRAWLER_WITH_CALLBACK = """\
from  multiprocessing import Pool
import requests
import os
import time
def get_page(url):
    print('<%s> is getting [%s]' %(os.getpid(),url))
    response = requests.get(url)  #得到地址
    time.sleep(0.05)
    print('<%s> is  done [%s]'%(os.getpid(),url))
    return {'url':url,'text':response.text}
def parse_page(res):
    '''解析函数'''
    print('<%s> parse [%s]'%(os.getpid(),res['url']))
    with open('db.txt','a') as f:
        parse_res = 'url:%s size:%s\\n' %(res['url'],len(res['text']))
        f.write(parse_res)
if __name__ == '__main__':
    p = Pool(4)
    urls = [
{URLS}    ]
    for url in urls:
        obj = p.apply_async(get_page,args=(url,),callback=parse_page)
    p.close()
    p.join()
    print('主',os.getpid())  #都不用.get()方法了
"""


@both_imports
def test_crawler_with_callback(impl: str, tmp_path: Path, web: str) -> None:
    """三.回调函数: workers fetch, ``callback=parse_page`` runs in the parent and
    appends ``url:... size:...`` to db.txt; join waits for every callback."""
    pytest.importorskip("requests", reason="the crawler examples use requests")
    source = _with_urls(CRAWLER_WITH_CALLBACK, web)
    lines = run_example(write_example(tmp_path, source, impl))
    urls = [f"{web}/{page}" for page in PAGES]

    db = (tmp_path / "db.txt").read_text().splitlines()
    assert sorted(db) == sorted(
        f"url:{url} size:{len(page_body(page))}" for url, page in zip(urls, PAGES, strict=True)
    )

    main_pid = lines[-1].split()[1]
    assert lines[-1] == f"主 {main_pid}"
    parsed = [re.fullmatch(r"<(\d+)> parse \[(.*)\]", line) for line in lines]
    assert sorted(m[2] for m in parsed if m) == sorted(urls)
    assert {m[1] for m in parsed if m} == {main_pid}  # callbacks run in the parent
    for step in ("is getting", "is  done"):
        fetched = [re.fullmatch(rf"<(\d+)> {step} \[(.*)\]", line) for line in lines]
        assert sorted(m[2] for m in fetched if m) == sorted(urls)
        assert main_pid not in {m[1] for m in fetched if m}  # fetched in the workers


CRAWLER_GATHER_ALL = """\
from  multiprocessing import Pool
import requests
import os
def get_page(url):
    print('<%os> get [%s]' %(os.getpid(),url))
    response = requests.get(url)  #得到地址  response响应
    return {'url':url,'text':response.text}
if __name__ == '__main__':
    p = Pool(4)
    urls = [
{URLS}    ]
    obj_l= []
    for url in urls:
        obj = p.apply_async(get_page,args=(url,))
        obj_l.append(obj)
    p.close()
    p.join()
    print([obj.get() for obj in obj_l])
"""


@both_imports
def test_crawler_gather_all(impl: str, tmp_path: Path, web: str) -> None:
    """No callback: wait for the pool, then ``obj.get()`` each result, in order."""
    pytest.importorskip("requests", reason="the crawler examples use requests")
    source = _with_urls(CRAWLER_GATHER_ALL, web)
    lines = run_example(write_example(tmp_path, source, impl))
    urls = [f"{web}/{page}" for page in PAGES]

    # The tutorial's '<%os>' prints the pid in octal followed by an 's'; kept verbatim.
    gets = [re.fullmatch(r"<[0-7]+s> get \[(.*)\]", line) for line in lines[:-1]]
    assert all(gets)
    assert sorted(m[1] for m in gets if m) == sorted(urls)
    results = ast.literal_eval(lines[-1])
    assert results == [
        {"url": url, "text": page_body(page)} for url, page in zip(urls, PAGES, strict=True)
    ]


# ----------------------------------------------- apply from threads is concurrent


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    mgr = multiprocessing.get_context("spawn").Manager()
    yield mgr
    mgr.shutdown()


@both_imports
def test_apply_from_several_threads_runs_concurrently(impl: str, manager: Any) -> None:
    """The tutorial: "to run func concurrently with different arguments, call
    p.apply() from different threads". Three applies that meet at a barrier can only
    return if all three run at the same time, in three workers."""
    parties = 3
    pool = POOLS[impl](parties, context=multiprocessing.get_context("fork"))
    try:
        barrier = manager.Barrier(parties)
        with ThreadPoolExecutor(parties) as threads:
            pids = list(threads.map(lambda _: pool.apply(barrier_pid, (barrier,)), range(parties)))
        assert len(set(pids)) == parties
    finally:
        pool.terminate()
        pool.join()
