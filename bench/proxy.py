"""HTTP and WebSocket throughput through Dockyard's reverse proxy against
configurable-http-proxy.

One backend, inside one Dockyard instance: a tiny tornado app (tornado is in the
`pytorch-2.13-cpu` image's /opt/venv, JupyterLab's environment) answering GET with a
small body and echoing WebSocket messages at any path ending in /ws. The instance runs
on a Server (tests/harness.py) with one simulated GPU, so it gets the whole machine's
CPUs (no CPU quota below the host's). Its port is exposed through the API
(POST /instances/{id}/ports), and the same backend is then measured three ways:

  direct     http://IP:PORT/              the container's address on its bridge network,
                                          no proxy: the ceiling for both proxies
  chp        http://127.0.0.1:CHP/        configurable-http-proxy (JupyterHub's proxy),
                                          started here with --default-target http://IP:PORT
  dockyard   http://<id>.localhost:SRV/instances/<id>/ports/<port>/
                                          (the instance's own host, reached at 127.0.0.1)
                                          with `Authorization: Bearer <owner's token>`
  dy-fwd     Dockyard's relay alone (dockyard.access.relay) with a fixed route to the
             backend: no authentication, database or Docker look-up (a separate process
             started here)

at concurrency 1, 10 and 50 (--concurrency), each point for --duration seconds
(default 5) after a 1 s warm-up, in --rounds rounds (default 3) with the targets
interleaved within each round; the median of the rounds is reported.

  HTTP       requests per second: `wrk -t1 -cN -dDs` (Debian's wrk; one load thread,
             keep-alive), or with --http-client python a small asyncio keep-alive client.
  WebSocket  echoed messages per second: N connections (opened before the clock
             starts), each sending a 64-byte text message and waiting for its echo, in a
             loop; an asyncio client on uvloop with the `websockets` library, offering
             permessage-deflate as browsers do (--no-deflate: offer nothing).

--profile DIR additionally records the Dockyard server and dy-fwd with py-spy (--py-spy, default
/var/tmp/pyspy/bin/py-spy) during one extra HTTP and one extra WebSocket point at
concurrency 10 and prints where its time goes (raw stacks are left in DIR).

Needs dockerd, the image `dockyard/pytorch:2.13.0-cpu` (see docs/images.md), wrk, and
configurable-http-proxy (`npm install --prefix /var/tmp/chp configurable-http-proxy`;
--chp names the executable).

    cd /work/main && .venv/bin/python bench/proxy.py [--duration 5] [--rounds 3] [--profile /tmp/prof]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.harness import Server, free_port, resolve_localhost_subdomains, wait_status  # noqa: E402

IMAGE_NAME = "pytorch-2.13-cpu"
GPU_MODEL = "A100-80GB"
BACKEND_PORT = 9000
MESSAGE = "x" * 64
DEFAULT_CHP = "/var/tmp/chp/node_modules/.bin/configurable-http-proxy"

BACKEND = r'''
import sys
import tornado.ioloop
import tornado.web
import tornado.websocket

BODY = b"hello from the backend, a small answer of about 64 bytes......\n"


class Root(tornado.web.RequestHandler):
    def compute_etag(self):
        return None

    def get(self, *args):
        self.set_header("Content-Type", "text/plain")
        self.write(BODY)


class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


app = tornado.web.Application([(r".*/ws", Echo), (r".*", Root)], log_function=lambda handler: None)
app.listen(int(sys.argv[1]), "0.0.0.0")
tornado.ioloop.IOLoop.current().start()
'''


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- load generators -------------------------------------------------------------------


def _address(host: str) -> str:
    """Where to connect for `host`: the instances' hosts (`<id>.localhost`) are this machine."""
    return "127.0.0.1" if host.endswith(".localhost") else host


def wrk_point(url: str, headers: dict[str, str], conc: int, duration: float) -> tuple[float, int]:
    """Requests per second and the number of bad answers (non-2xx/3xx, socket errors)."""
    args = ["wrk", "-t1", f"-c{conc}", f"-d{duration:g}s", "--timeout", "10s"]
    parsed = httpx.URL(url)
    if _address(parsed.host) != parsed.host:  # wrk resolves names itself: connect by address, send the Host
        headers = {**headers, "Host": f"{parsed.host}:{parsed.port}"}
        url = str(parsed.copy_with(host=_address(parsed.host)))
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rate:
        raise RuntimeError(f"wrk said:\n{out}")
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        bad += sum(int(n) for n in errors.groups())
    return float(rate.group(1)), bad


async def _python_http(url: str, headers: dict[str, str], conc: int, duration: float) -> tuple[float, int]:
    parsed = httpx.URL(url)
    request = (f"GET {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    counts, bad = [0] * conc, [0]
    stop = asyncio.Event()

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection(_address(parsed.host), parsed.port)
        try:
            while not stop.is_set():
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if not length:
                    raise RuntimeError(f"no Content-Length in {head!r}")
                await reader.readexactly(int(length.group(1)))
                if status >= 400:
                    bad[0] += 1
                if not stop.is_set():
                    counts[index] += 1
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(worker(i)) for i in range(conc)]
    t0 = loop.time()
    await asyncio.sleep(duration)
    stop.set()
    total, elapsed = sum(counts), loop.time() - t0
    await asyncio.gather(*tasks)
    return total / elapsed, bad[0]


async def _websocket(url: str, headers: dict[str, str], conc: int, duration: float,
                     deflate: bool) -> tuple[float, str]:
    parsed = httpx.URL(url)
    sockets = [await connect(url, additional_headers=headers, max_size=None, open_timeout=20,
                             compression="deflate" if deflate else None, host=_address(parsed.host),
                             port=parsed.port) for _ in range(conc)]
    negotiated = sockets[0].response.headers.get("sec-websocket-extensions") or ""
    extensions = "deflate" if "permessage-deflate" in negotiated else "no compression"
    counts = [0] * conc
    stop = False

    async def worker(index: int, ws) -> None:
        while not stop:
            await ws.send(MESSAGE)
            if await ws.recv() != MESSAGE:
                raise RuntimeError("the echo differs from what was sent")
            counts[index] += 1

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = [asyncio.create_task(worker(i, ws)) for i, ws in enumerate(sockets)]
    await asyncio.sleep(duration)
    stop = True
    total, elapsed = sum(counts), loop.time() - t0
    await asyncio.gather(*tasks)
    for ws in sockets:
        await ws.close()
    return total / elapsed, extensions


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# ---- the backend, the proxies ---------------------------------------------------------


def start_backend(server: Server, api: httpx.Client) -> tuple[str, str]:
    """An instance running the echo backend on BACKEND_PORT, exposed: (instance id, its IP)."""
    created = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1,
                                           "name": "echo"})
    created.raise_for_status()
    key = created.json()["id"]
    wait_status(api, key, "running", timeout=180)
    script = base64.b64encode(BACKEND.encode()).decode()
    started = api.post(f"/instances/{key}/exec", json={"command": [
        "sh", "-c", f"echo {script} | base64 -d > /root/echo.py && "
                    f"nohup /opt/venv/bin/python /root/echo.py {BACKEND_PORT} > /root/echo.log 2>&1 &"]})
    started.raise_for_status()
    api.post(f"/instances/{key}/ports", json={"port": BACKEND_PORT}).raise_for_status()
    attrs = docker.from_env().api.inspect_container(f"dy-{server.deployment}-{key}")
    ip = next(n["IPAddress"] for n in attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress"))
    return key, ip


def start_chp(chp: str, target: str, home: Path) -> tuple[subprocess.Popen, str]:
    port, api_port = free_port(), free_port()
    log = open(home / "chp.log", "ab")
    process = subprocess.Popen(
        [chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1", "--api-port", str(api_port),
         "--default-target", target, "--log-level", "warn"],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": os.urandom(16).hex()}, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}/"


FORWARD_ONLY = r'''
import asyncio
import sys

import uvloop

from dockyard.access.relay import ClientConnection, Route

host, target_port = sys.argv[1].split(":")
port = int(sys.argv[2])


async def main():
    route = lambda request: Route((host, int(target_port)), request.url)  # noqa: E731
    server = await asyncio.get_running_loop().create_server(lambda: ClientConnection(route), "127.0.0.1", port)
    await server.serve_forever()


uvloop.run(main())
'''


def start_forward_only(target: str, home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(home / "forward-only.log", "ab")
    process = subprocess.Popen([sys.executable, "-c", FORWARD_ONLY, target, str(port)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO)
    return process, f"http://127.0.0.1:{port}/"


def wait_ok(url: str, headers: dict[str, str], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, headers=headers, timeout=5)
            if last.status_code == 200 and last.text.startswith("hello from the backend"):
                return
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url}: {last!r}")


# ---- profiling ---------------------------------------------------------------------------

BUCKETS = [  # (label, substring of a frame "function (file:line)"); the innermost matching frame wins
    ("look-ups on a cache miss (database, docker inspect)", "(dockyard/access/targets.py"),
    ("thread-pool hand-offs", "(concurrent/futures/thread.py"),
    ("routing: path match, cache hit (front)", "(dockyard/access/front.py"),
    ("relay: parse heads, rewrite, write bytes", "(dockyard/access/relay.py"),
    ("uvicorn, starlette/fastapi (the application's requests)", "(uvicorn/"),
    ("uvicorn, starlette/fastapi (the application's requests)", "(starlette/"),
    ("uvicorn, starlette/fastapi (the application's requests)", "(fastapi/"),
    ("logging", "(logging/"),
    ("event loop (uvloop, native)", "run (uvloop/"),
    ("event loop (uvloop, native)", "Runner.run (asyncio/runners.py"),
]


def profile(py_spy: str, pid: int, out: Path, seconds: float, run) -> Path:
    raw = out / f"{run.__name__}.txt"
    spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds) + 1),
                            "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    run()
    spy.wait(timeout=120)
    return raw


def summarise(raw: Path) -> None:
    """Share of the server's samples by the innermost known layer, and the busiest leaves."""
    total, buckets, leaves, threads = 0, collections.Counter(), collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0][:40]] += n
        leaves[frames[-1]] += n
        label = "other"
        for frame in reversed(frames):
            hit = next((lab for lab, key in BUCKETS if key in frame), None)
            if hit:
                label = hit
                break
        if label == "other" and any("threading.py" in f for f in frames[:2]):
            label = "other, in worker threads"
        buckets[label] += n
    print(f"  {raw.name}: {total} samples (idle samples excluded by py-spy)")
    for label, n in buckets.most_common():
        print(f"    {100 * n / total:5.1f}%  {label}")
    print("    busiest leaf frames:")
    for frame, n in leaves.most_common(8):
        print(f"    {100 * n / total:5.1f}%  {frame[:110]}")
    print("    by thread:", ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in threads.most_common(4)))


# ---- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all points; the median is reported")
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated (default 1,10,50)")
    parser.add_argument("--protocols", default="http,ws", help="http, ws or both (default http,ws)")
    parser.add_argument("--chp", default=DEFAULT_CHP, help="configurable-http-proxy executable")
    parser.add_argument("--http-client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--no-deflate", action="store_true", help="WebSocket client offers no permessage-deflate")
    parser.add_argument("--profile", type=Path, help="record the server with py-spy; raw stacks go here")
    parser.add_argument("--py-spy", default="/var/tmp/pyspy/bin/py-spy")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if not Path(args.chp).exists() and not shutil.which(args.chp):
        print(f"configurable-http-proxy not found at {args.chp}: npm install --prefix /var/tmp/chp "
              "configurable-http-proxy", file=sys.stderr)
        return 1

    resolve_localhost_subdomains()  # for httpx's look-ups of the instance's host
    client = docker.from_env()
    server = Server(simulated_gpus=f"{GPU_MODEL}:1")
    chp_process = fwd_process = None
    print(f"docker {client.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, load average {load()}, "
          f"http client {args.http_client}, websocket deflate offered: {not args.no_deflate}", flush=True)
    try:
        server.start()
        api = server.add_user("bench")
        token = server.tokens["bench"]
        key, ip = start_backend(server, api)
        chp_version = subprocess.run([args.chp, "--version"], capture_output=True, text=True).stdout.strip()
        chp_process, chp_url = start_chp(args.chp, f"http://{ip}:{BACKEND_PORT}", server.home)
        fwd_process, fwd_url = start_forward_only(f"{ip}:{BACKEND_PORT}", server.home)
        auth = {"Authorization": f"Bearer {token}"}
        targets = {
            "direct": (f"http://{ip}:{BACKEND_PORT}/", {}),
            "chp": (chp_url, {}),
            "dockyard": (f"{server.instance_url(key)}/instances/{key}/ports/{BACKEND_PORT}/", auth),
            "dy-fwd": (fwd_url, {}),
        }
        for name, (url, headers) in targets.items():
            wait_ok(url, headers, name)
        print(f"backend in instance {key} at {ip}:{BACKEND_PORT}; configurable-http-proxy {chp_version} at "
              f"{chp_url}; dockyard at {targets['dockyard'][0]}", flush=True)
        time.sleep(3)  # let JupyterLab's start-up in the instance settle

        def http(name: str, conc: int, duration: float) -> tuple[float, str]:
            url, headers = targets[name]
            if args.http_client == "wrk":
                rate, bad = wrk_point(url, headers, conc, duration)
            else:
                rate, bad = run_async(_python_http(url, headers, conc, duration))
            return rate, f"{bad} bad" if bad else ""

        def ws(name: str, conc: int, duration: float) -> tuple[float, str]:
            url, headers = targets[name]
            url = url.replace("http://", "ws://") + "ws"
            return run_async(_websocket(url, headers, conc, duration, not args.no_deflate))

        results: dict[tuple[str, str, int], list[float]] = collections.defaultdict(list)
        notes: dict[tuple[str, str, int], str] = {}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds} (load average {load()})", flush=True)
            for kind, point in (("http", http), ("ws", ws)):
                if kind not in args.protocols.split(","):
                    continue
                for conc in levels:
                    for name in targets:
                        point(name, conc, 1.0)  # warm-up: connections, caches
                        rate, note = point(name, conc, args.duration)
                        results[(kind, name, conc)].append(rate)
                        if note:
                            notes[(kind, name, conc)] = note
                        print(f"  {kind:4} c={conc:<3} {name:8} {rate:9.0f}/s {note}", flush=True)
        load_end = load()

        print()
        print(f"median of {args.rounds} rounds, {args.duration:g} s per point; HTTP req/s, WebSocket msg/s")
        print(f"{'':14} {'direct':>9} {'chp':>9} {'dockyard':>9} {'dy-fwd':>9} {'dockyard/chp':>13} "
              f"{'dy-fwd/chp':>11}  dockyard runs")
        for kind in ("http", "ws"):
            if kind not in args.protocols.split(","):
                continue
            for conc in levels:
                med = {n: statistics.median(results[(kind, n, conc)]) for n in targets}
                runs = " ".join(f"{r:.0f}" for r in results[(kind, "dockyard", conc)])
                chp_runs = " ".join(f"{r:.0f}" for r in results[(kind, "chp", conc)])
                extra = ", ".join(f"{n} {notes[(kind, n, conc)]}" for n in targets if (kind, n, conc) in notes)
                extra = f"  [{extra}]" if extra else ""
                print(f"{kind:4} c={conc:<8} {med['direct']:9.0f} {med['chp']:9.0f} {med['dockyard']:9.0f} "
                      f"{med['dy-fwd']:9.0f} {med['dockyard'] / med['chp']:12.2f}x {med['dy-fwd'] / med['chp']:10.2f}x"
                      f"  {runs}  (chp {chp_runs}){extra}")
        print(f"load average at the end: {load_end}")

        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            print("\nprofiling the server and dy-fwd with py-spy, concurrency 10:")

            for name, pid in (("dockyard", server.process.pid), ("dy-fwd", fwd_process.pid)):
                def http_run(name=name) -> None:
                    print(f"  http c=10 {name} under py-spy: {http(name, 10, args.duration)[0]:.0f} req/s")

                def ws_run(name=name) -> None:
                    print(f"  ws   c=10 {name} under py-spy: {ws(name, 10, args.duration)[0]:.0f} msg/s")

                http_run.__name__, ws_run.__name__ = f"{name}_http", f"{name}_ws"
                for run in (http_run, ws_run):
                    summarise(profile(args.py_spy, pid, args.profile, args.duration, run))
        return 0
    except Exception as exc:
        return server.report_failure(exc)
    finally:
        for process in (chp_process, fwd_process):
            if process:
                process.terminate()
                process.wait(10)
        server.close()


if __name__ == "__main__":
    sys.exit(main())
