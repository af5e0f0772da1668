"""``fluxvit serve`` under open-loop Poisson load: a plain server (``--budget fixed``) against the
adaptive one (``--budget adaptive``) at rising request rates.

For each mode a real ``fluxvit serve`` process is started on a free loopback port, with the test
split's folder as its media root (requests name a video by ``path``, so upload cost is not
measured). Each rate replays Poisson arrivals (exponential gaps from a seeded generator,
rescaled to the nominal mean rate; the same arrival times and videos for both modes) for at most
``--requests`` requests and ``--rate-seconds`` seconds; every request is sent at its time
whether or not the earlier ones have been answered (open loop), from one asyncio loop (the
client shares the CPU with the server). Between rates the benchmark waits until ``GET /health``
shows nothing in flight.

Per rate and mode: p50/p95/p99 client-side latency of the answered requests, throughput
(answers/s), the share refused (503) and failed otherwise, top-1 over the answered requests and
over all sent (refused ones counted wrong), the budgets used (tokens -> count) and the top-1 the
budget table (``GET /v1/model`` operating points: Token Optimization's tune accuracy) predicts for
that mix. The headline: at the lowest rate where the fixed server's p95 passes 2x the target, the
adaptive server's p95 against the target and its top-1 loss against the fixed server's, beside
the loss the budget table predicts.

    fluxvit demo                                  # once: runs/demo (checkpoint, test.csv, data/)
    python benchmarks/bench_serve.py              -> benchmarks/results/serve.json
    python benchmarks/bench_serve.py --checkpoint C --data test.csv --latency-ms 100 --rates 4,8,16,32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))
from common import RESULTS, machine  # noqa: E402

from fluxvit.atomic import write_text  # noqa: E402

MODES = ("fixed", "adaptive")
DEFAULT_CHECKPOINT = "runs/demo/flux/model.safetensors"
DEFAULT_DATA = "runs/demo/test.csv"
DEFAULT_LATENCY_MS = 100.0
DEFAULT_RATES = "4,8,16,24,32,40,48,64"
STARTUP_TIMEOUT_S = 240.0
IDLE_TIMEOUT_S = 60.0
SLOW_FACTOR = 2.0  # the headline: the lowest rate where the fixed server's p95 passes this times the target


# -- the test split
def read_split(csv: Path, data_root: Path | None) -> tuple[list[tuple[str, str]], Path]:
    """``(relative path, label)`` of each line of ``csv`` and the folder the paths are under:
    ``data_root`` if given, else the list's folder, or ``data/`` beside it if the paths are there."""
    items = []
    for line in csv.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, _, label = line.rpartition(" ") if " " in line else line.rpartition(",")
        items.append((path.strip().rstrip(","), label.strip()))
    if not items:
        raise SystemExit(f"{csv}: no videos listed")
    if data_root is None:
        probe = [p for p, _ in items[:: max(1, len(items) // 8)]]
        for candidate in (csv.parent, csv.parent / "data"):
            if all((candidate / p).is_file() for p in probe):
                data_root = candidate
                break
        else:
            raise SystemExit(f"{csv}: its videos ({probe[0]}, ...) are neither under {csv.parent} nor under "
                             f"{csv.parent / 'data'}; give --data-root")
    return items, data_root.resolve()


def label_names(items: list[tuple[str, str]], csv: Path, data_root: Path, model_classes: list[str]) -> list[str]:
    """Each item's class name: a numeric label is an index into classes.txt (beside the list or in
    the data root) or, without one, into the model's classes."""
    classes = model_classes
    for folder in (csv.parent, data_root):
        if (folder / "classes.txt").is_file():
            classes = [c.strip() for c in (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
                       if c.strip()]
            break
    if classes != model_classes:
        print(f"note: classes.txt differs from the model's classes ({len(classes)} vs {len(model_classes)})")
    return [classes[int(label)] if label.isdigit() else label for _, label in items]


# -- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``fluxvit serve`` child process on 127.0.0.1, its output in ``log``."""

    def __init__(self, args, mode: str, data_root: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command = [sys.executable, "-m", "fluxvit", "serve", "--checkpoint", str(args.checkpoint),
                        "--host", "127.0.0.1", "--port", str(self.port), "--latency-ms", f"{args.latency_ms:g}",
                        "--budget", mode, "--media-root", str(data_root)]
        if args.sample_video != "server":
            self.command += ["--sample-video", str(args.sample_video)]
        self.command += shlex.split(args.extra)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.command, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, client: httpx.AsyncClient) -> float:
        deadline = time.perf_counter() + STARTUP_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fluxvit serve exited with {self.proc.returncode} at start:\n{self.tail()}")
            try:
                if (await client.get(self.url + "/health", timeout=2.0)).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
        raise RuntimeError(f"fluxvit serve did not answer /health in {STARTUP_TIMEOUT_S:g} s:\n{self.tail()}")

    def stop(self, timeout_s: float = 45.0) -> dict:
        """SIGTERM, then SIGKILL after ``timeout_s``: how it ended."""
        start, killed = time.perf_counter(), False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        self._out.close()
        text = self.log.read_text(errors="replace")
        problems = [line for line in text.splitlines()
                    if any(w in line for w in ("Traceback", "ERROR", "Error", "WARNING", "Exception"))]
        return {"returncode": self.proc.returncode, "killed": killed,
                "stop_s": round(time.perf_counter() - start, 2), "log_problems": problems[:40],
                "log_tail": text.splitlines()[-15:]}


# -- the load
def cpu_seconds(pid: int) -> tuple[float, float, float] | None:
    """(busy CPU s of the whole machine, of process ``pid``, of this process) so far, from /proc
    (None where there is none): what other work on the machine took shows as the difference."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / tick
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(stat[11]) + int(stat[12])) / tick  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    own = os.times()
    return busy, server, own.user + own.system


def cpu_shares(before, after, wall_s: float) -> dict | None:
    """Percent of the machine's CPU (all cores over ``wall_s``) the server, this client and
    everything else used between two :func:`cpu_seconds`."""
    if before is None or after is None or wall_s <= 0:
        return None
    total = wall_s * (os.cpu_count() or 1)
    busy, server, client = (a - b for a, b in zip(after, before))
    return {"server_pct": round(100 * server / total, 1), "client_pct": round(100 * client / total, 1),
            "others_pct": round(100 * max(0.0, busy - server - client) / total, 1)}


async def wait_idle(client: httpx.AsyncClient, url: str) -> float | None:
    """Seconds until GET /health shows nothing in flight (None: not within IDLE_TIMEOUT_S)."""
    start = time.perf_counter()
    while time.perf_counter() - start < IDLE_TIMEOUT_S:
        try:
            health = (await client.get(url + "/health", timeout=5.0)).json()
            if health.get("in_flight") == 0:
                return time.perf_counter() - start
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(0.1)
    print(f"warning: the server still had requests in flight {IDLE_TIMEOUT_S:g} s after a rate ended")
    return None


async def one_request(client: httpx.AsyncClient, url: str, path: str, timeout_s: float) -> dict:
    start = time.perf_counter()
    try:
        r = await client.post(url + "/v1/classify", files={"path": (None, path), "topk": (None, "1")},
                              timeout=timeout_s)
    except httpx.TimeoutException:
        return {"status": "timeout", "ms": 1e3 * (time.perf_counter() - start)}
    except httpx.HTTPError as e:
        return {"status": "error", "error": type(e).__name__, "ms": 1e3 * (time.perf_counter() - start)}
    ms = 1e3 * (time.perf_counter() - start)
    try:
        body = r.json()
    except ValueError:
        body = {}
    out = {"status": r.status_code, "ms": ms}
    if r.status_code == 200:
        out.update(label=body["top"][0]["label"], point=f"{body['tokens']}@{body['grid']}", batch=body["batch"],
                   timing=body["timing_ms"])
    else:
        out.update(kind=body.get("kind"), error=str(body.get("error", r.text))[:200])
    return out


async def replay(client: httpx.AsyncClient, url: str, arrivals: np.ndarray, paths: list[str],
                 timeout_s: float) -> tuple[list[dict], float, list[float]]:
    """Send ``paths[i]`` at ``arrivals[i]`` s from now, open loop: the answers, the seconds from
    the first send to the last answer, and how late each send was (ms)."""
    t0 = time.perf_counter()
    tasks, late = [], []
    for at, path in zip(arrivals, paths):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(1e3 * max(0.0, time.perf_counter() - t0 - at))
        tasks.append(asyncio.create_task(one_request(client, url, path, timeout_s)))
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - t0, late


def summarise(results: list[dict], truth: list[str], span_s: float, late: list[float],
              points: dict[str, float | None], rate: float, arrivals: np.ndarray) -> dict:
    ok = [(r, t) for r, t in zip(results, truth) if r["status"] == 200]
    ms = np.array([r["ms"] for r, _ in ok])
    refused = sum(r["status"] == 503 for r in results)
    errors = [r for r in results if r["status"] not in (200, 503)]
    correct = sum(r["label"] == t for r, t in ok)
    used: dict[str, int] = {}  # "tokens@grid" -> answers
    for r, _ in ok:
        used[r["point"]] = used.get(r["point"], 0) + 1
    known = {b: n for b, n in used.items() if points.get(b) is not None}
    predicted = (sum(points[b] * n for b, n in known.items()) / sum(known.values())) if known else None
    sent = len(results)

    def mean(key: str) -> float | None:
        return round(float(np.mean([r["timing"][key] for r, _ in ok])), 2) if ok else None

    return {
        "rate": rate, "sent": sent,
        "offered_per_s": round((sent - 1) / float(arrivals[-1]), 2) if sent > 1 else None,
        "answered": len(ok), "refused": refused, "errors": len(errors),
        "refusal_example": next((r.get("error") for r in results if r["status"] == 503), None),
        "error_kinds": sorted({str(r.get("kind") or r.get("error") or r["status"]) for r in errors}),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) if ok else None for q in (50, 95, 99)},
        "max_ms": round(float(np.max(ms)), 1) if ok else None,
        "throughput_per_s": round(len(ok) / span_s, 2), "span_s": round(span_s, 2),
        "refused_pct": round(100 * refused / sent, 1), "error_pct": round(100 * len(errors) / sent, 1),
        "top1_answered_pct": round(100 * correct / len(ok), 1) if ok else None,
        "top1_all_pct": round(100 * correct / sent, 1),
        "budgets_used": {b: used[b] for b in sorted(used, key=lambda b: int(b.split("@")[0]))},
        "predicted_top1_pct": round(predicted, 2) if predicted is not None else None,
        "mean_server_ms": {"queue": mean("queue"), "decode": mean("decode"), "forward": mean("forward")},
        "mean_batch": round(float(np.mean([r["batch"] for r, _ in ok])), 2) if ok else None,
        "client_send_late_ms": {"p50": round(float(np.percentile(late, 50)), 2),
                                "max": round(float(np.max(late)), 2)},
    }


def plan(rates: list[float], items: list, args) -> list[tuple[np.ndarray, list[int]]]:
    """Per rate: arrival times (s) and the indices of the videos sent, the same for every mode.
    One seeded sequence of exponential gaps, rescaled to a mean of exactly 1, is scaled to each
    rate (so the rates differ by their rate only, not by the luck of the draw, and each offers
    its nominal rate while keeping Poisson's bursts); the videos follow one seeded permutation of
    the split, each rate continuing where the last stopped (so the rates between them cover it)."""
    rng = np.random.default_rng(args.seed)
    gaps = rng.exponential(1.0, args.requests)
    gaps[0] = 0.0  # the first request at once
    if args.requests > 1:
        gaps *= (args.requests - 1) / gaps.sum()
    order = rng.permutation(len(items))
    out, offset = [], 0
    for rate in rates:
        arrivals = np.cumsum(gaps) / rate
        arrivals = arrivals[arrivals <= args.rate_seconds]
        picked = [int(order[(offset + k) % len(order)]) for k in range(len(arrivals))]
        offset += len(arrivals)
        out.append((arrivals, picked))
    return out


async def run_mode(mode: str, args, items, data_root: Path, schedule, rates, logdir: Path) -> dict:
    server = Server(args, mode, data_root, logdir / f"serve_{mode}.log")
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    rows, info, stopped = [], {}, None
    try:
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            ready_s = await server.wait_ready(client)
            info = (await client.get(server.url + "/v1/model")).json()
            points = {f"{p['tokens']}@{p['grid']}": p["top1"] for p in info["operating_points"]}
            truth = label_names(items, args.data, data_root, info["classes"])
            print(f"[{mode}] ready in {ready_s:.1f} s; operating points "
                  + ", ".join(f"{p['tokens']}@{p['grid']} {p['total_ms']:.0f} ms top1 {p['top1']}"
                              for p in info["operating_points"]), flush=True)
            warmup = []
            for k in range(args.warmup):  # first forwards and the cost calibration, one at a time
                warmup.append(await one_request(client, server.url, items[k % len(items)][0], args.timeout_s))
            warm_ok = sum(w["status"] == 200 for w in warmup)
            if warm_ok < len(warmup):
                print(f"[{mode}] warning: {len(warmup) - warm_ok} of {len(warmup)} warm-up requests, sent one at a "
                      f"time to an idle server, failed: " + "; ".join(
                          sorted({f"{w['status']} {w.get('error', '')}" for w in warmup if w["status"] != 200})),
                      flush=True)
            await wait_idle(client, server.url)
            for rate, (arrivals, picked) in zip(rates, schedule):
                cpu_before, wall_before = cpu_seconds(server.proc.pid), time.perf_counter()
                results, span, late = await replay(client, server.url, arrivals, [items[i][0] for i in picked],
                                                   args.timeout_s)
                row = summarise(results, [truth[i] for i in picked], span, late, points, rate, arrivals)
                row["mode"] = mode
                row["cpu"] = cpu_shares(cpu_before, cpu_seconds(server.proc.pid), time.perf_counter() - wall_before)
                idle_s = await wait_idle(client, server.url)
                row["idle_wait_s"] = round(idle_s, 2) if idle_s is not None else None
                row["loadavg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine shows here
                rows.append(row)
                print(f"[{mode}] {rate:g}/s: sent {row['sent']} p50 {row['p50_ms']} p95 {row['p95_ms']} "
                      f"p99 {row['p99_ms']} ms, {row['throughput_per_s']}/s, refused {row['refused_pct']}%, "
                      f"errors {row['errors']} {row['error_kinds']}, top1 {row['top1_answered_pct']}% "
                      f"budgets {row['budgets_used']} batch {row['mean_batch']} server {row['mean_server_ms']} "
                      f"cpu {row['cpu']}",
                      flush=True)
            metrics = (await client.get(server.url + "/metrics")).text
    finally:
        stopped = server.stop()
    calibration = [line for line in metrics.splitlines() if line.startswith("fluxvit_latency_calibration")]
    return {"mode": mode, "command": server.command, "ready_s": round(ready_s, 1), "model": info,
            "warmup": [{k: v for k, v in w.items() if k != "timing"} for w in warmup],
            "rows": rows, "server_exit": stopped, "final_calibration": calibration[0].split()[-1] if calibration
            else None}


# -- the report
def _budgets(used: dict) -> str:
    return ", ".join(f"{b}:{n}" for b, n in used.items()) or "-"


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def table(rows: list[dict]) -> str:
    lines = ["| rate req/s (offered) | mode | p50 ms | p95 ms | p99 ms | throughput (/s) | refused % | "
             "top-1 % answered (all sent) | points used (tokens@grid:count) | predicted top-1 % |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in sorted(rows, key=lambda r: (r["rate"], MODES.index(r["mode"]) if r["mode"] in MODES else 9)):
        refused = f"{r['refused_pct']:.1f}" + (f" (+{r['errors']} err)" if r["errors"] else "")
        top1 = f"{r['top1_answered_pct']:.1f} ({r['top1_all_pct']:.1f})" if r["top1_answered_pct"] is not None \
            else "-"
        predicted = f"{r['predicted_top1_pct']:.1f}" if r["predicted_top1_pct"] is not None else "-"
        offered = f" ({r['offered_per_s']:.1f})" if r["offered_per_s"] is not None else ""
        lines.append(f"| {r['rate']:g}{offered} | {r['mode']} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | "
                     f"{_ms(r['p99_ms'])} | "
                     f"{r['throughput_per_s']:.1f} | {refused} | {top1} | {_budgets(r['budgets_used'])} | "
                     f"{predicted} |")
    return "\n".join(lines)


def headline(rows: list[dict], target_ms: float) -> dict:
    fixed = {r["rate"]: r for r in rows if r["mode"] == "fixed"}
    adaptive = {r["rate"]: r for r in rows if r["mode"] == "adaptive"}
    slow = [rate for rate in sorted(fixed) if (fixed[rate]["p95_ms"] or 0) > SLOW_FACTOR * target_ms]
    if not slow:
        top = max(fixed) if fixed else None
        return {"rate": None, "line": f"the fixed server's p95 stayed within {SLOW_FACTOR:g}x the {target_ms:g} ms "
                                      f"target at every rate (up to {top} req/s): raise --rates"}
    rate = slow[0]
    f = fixed[rate]
    a = adaptive.get(rate)
    if a is None:
        return {"rate": rate, "line": f"at {rate:g} req/s the fixed server's p95 is {f['p95_ms']:.0f} ms "
                                      f"(> {SLOW_FACTOR:g}x the {target_ms:g} ms target); adaptive not run"}
    if a["answered"] == 0:
        return {"rate": rate, "fixed_p95_ms": f["p95_ms"], "adaptive_p95_ms": None,
                "adaptive_refused_pct": a["refused_pct"],
                "line": f"At {rate:g} req/s (the lowest rate where the fixed server's p95, {f['p95_ms']:.0f} ms, "
                        f"passes {SLOW_FACTOR:g}x the {target_ms:g} ms target), the adaptive server answered "
                        f"nothing: {a['refused_pct']:.0f}% refused, {a['errors']} errors "
                        f"(top-1 over all sent 0 vs the fixed server's {f['top1_all_pct']:.1f}%)."}
    loss = f["top1_answered_pct"] - a["top1_answered_pct"] if a["top1_answered_pct"] is not None else None
    loss_all = f["top1_all_pct"] - a["top1_all_pct"]
    predicted = (f["predicted_top1_pct"] - a["predicted_top1_pct"]
                 if f["predicted_top1_pct"] is not None and a["predicted_top1_pct"] is not None else None)
    line = (f"At {rate:g} req/s (the lowest rate where the fixed server's p95, {f['p95_ms']:.0f} ms, passes "
            f"{SLOW_FACTOR:g}x the {target_ms:g} ms target), the adaptive server's p95 is {a['p95_ms']:.0f} ms "
            f"({a['p95_ms'] / target_ms:.2f}x the target; {a['refused_pct']:.1f}% refused), "
            f"its top-1 loss vs fixed is "
            + (f"{loss:+.1f} pts over answered requests" if loss is not None else "n/a")
            + f" ({loss_all:+.1f} pts over all sent, refused counted wrong), against a budget-table "
            + (f"predicted loss of {predicted:+.1f} pts" if predicted is not None else "prediction of n/a")
            + f" (budgets {_budgets(a['budgets_used'])}).")
    return {"rate": rate, "fixed_p95_ms": f["p95_ms"], "adaptive_p95_ms": a["p95_ms"],
            "adaptive_p95_over_target": round(a["p95_ms"] / target_ms, 3), "adaptive_refused_pct": a["refused_pct"],
            "top1_loss_answered_pts": round(loss, 2) if loss is not None else None,
            "top1_loss_all_sent_pts": round(loss_all, 2),
            "predicted_loss_pts": round(predicted, 2) if predicted is not None else None, "line": line}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path(DEFAULT_CHECKPOINT),
                    help=f"a fluxvit checkpoint with TO choices (default {DEFAULT_CHECKPOINT}, from fluxvit demo)")
    ap.add_argument("--data", type=Path, default=Path(DEFAULT_DATA),
                    help=f"the test list, lines 'relative/path.mp4 label' (default {DEFAULT_DATA})")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="the folder its paths are under: the server's --media-root (default: the list's "
                         "folder, or data/ beside it if the paths are there)")
    ap.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS,
                    help=f"the servers' latency target (default {DEFAULT_LATENCY_MS:g})")
    ap.add_argument("--rates", default=DEFAULT_RATES, help=f"requests/s, comma separated (default {DEFAULT_RATES})")
    ap.add_argument("--requests", type=int, default=100, help="requests per rate at most (default 100)")
    ap.add_argument("--rate-seconds", type=float, default=30.0,
                    help="seconds of arrivals per rate at most (default 30)")
    ap.add_argument("--timeout-s", type=float, default=30.0, help="client timeout per request (default 30)")
    ap.add_argument("--warmup", type=int, default=8, help="requests sent one at a time before the rates (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="arrival times and video order (default 0)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma separated, of fixed, adaptive (default both)")
    ap.add_argument("--sample-video", default=None,
                    help="the video each server measures its operating points on at start (--sample-video): "
                         "default the split's first video (one like those served, as fluxvit serve --help "
                         "asks); 'server': the server's own default (a 320x240 clip it makes)")
    ap.add_argument("--extra", default="", help="more fluxvit serve options, one string (e.g. '--max-batch 4')")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve.json", help="the JSON written (default "
                    "benchmarks/results/serve.json)")
    return ap


def main(argv: list[str] | None = None) -> dict | None:
    args = parser().parse_args(argv if argv is not None else [])
    if not args.checkpoint.is_file() or not args.data.is_file():
        missing = args.checkpoint if not args.checkpoint.is_file() else args.data
        print(f"bench_serve skipped: {missing} not found (run `fluxvit demo`, or give --checkpoint and --data)")
        return None
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not rates or any(r <= 0 for r in rates) or any(m not in MODES for m in modes) or args.requests < 1:
        raise SystemExit("--rates: positive numbers; --modes: of fixed, adaptive; --requests: at least 1")
    items, data_root = read_split(args.data, args.data_root)
    if args.sample_video is None:
        args.sample_video = str(data_root / items[0][0])
    schedule = plan(rates, items, args)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_serve-") as tmp:
        for mode in modes:
            runs.append(asyncio.run(run_mode(mode, args, items, data_root, schedule, rates, Path(tmp))))
    rows = [r for run in runs for r in run["rows"]]
    head = headline(rows, args.latency_ms)
    payload = {"benchmark": "serve", "machine": machine(),
               "settings": {"checkpoint": str(args.checkpoint), "data": str(args.data), "data_root": str(data_root),
                            "videos": len(items), "latency_ms": args.latency_ms, "rates": rates,
                            "requests": args.requests, "rate_seconds": args.rate_seconds, "timeout_s": args.timeout_s,
                            "warmup": args.warmup, "seed": args.seed, "modes": modes, "extra": args.extra,
                            "sample_video": args.sample_video},
               "seconds": round(time.perf_counter() - started, 1), "headline": head, "rows": rows,
               "servers": [{k: v for k, v in run.items() if k != "rows"} for run in runs]}
    path = write_text(args.out, json.dumps(payload, indent=2))
    print(f"wrote {path} ({payload['seconds']:.0f} s)")
    print(table(rows))
    print()
    print(head["line"])
    busy = [r for r in rows if r.get("cpu") and r["cpu"]["others_pct"] > 10]
    if busy:
        print(f"note: other processes took over 10% of this machine's CPU during {len(busy)} of {len(rows)} rates "
              f"(up to {max(r['cpu']['others_pct'] for r in busy):.0f}%; 'cpu' in the JSON): their latencies "
              f"are this machine's, shared")
    for run in runs:
        ex = run["server_exit"]
        if ex["returncode"] not in (0, -signal.SIGTERM) or ex["killed"] or ex["log_problems"]:
            print(f"[{run['mode']}] server exit {ex['returncode']}{' (killed)' if ex['killed'] else ''}; log: "
                  + " | ".join(ex["log_problems"][:5]))
    return payload


if __name__ == "__main__":
    if main(sys.argv[1:]) is None:
        sys.exit(2)  # told to run on data that is not there
