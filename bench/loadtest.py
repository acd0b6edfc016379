"""The cost of governance: one chat-completion workload through each configuration.

`make bench` runs this with the project's `.venv` Python after building the release
artifacts and installing `oha` into `.tools`. Configurations, one at a time, each on its own
free loopback port:

  standin        the provider stand-in directly (no proxy at all)
  passthrough    Envoy with no filter
  filter_off     Envoy with the filter loaded and `benchmark_passthrough: true`, which makes
                 every callback return Continue at once (no auth, policy or evidence)
  filter_full    Envoy with the filter as shipped: API key auth, validation, the shipped
                 Rego bundle, evidence signed and delivered to a running evidence sink
  litellm        (--peers) the LiteLLM proxy from PyPI, key auth and per-request logging

Every configuration is plain HTTP on loopback, the stand-in and LiteLLM included, so TLS is
left out of every number alike. The Envoy configurations are `mercator render` output of
`envoy/gateway.yaml` (the gateway's own template) with its TLS transport socket removed, and,
for passthrough, the filter taken out of the HTTP filter chain. Envoy runs one worker
(`--concurrency 1`).

Method: a short closed-loop run finds each configuration's maximum throughput; then `oha`
sends at fixed rates (fractions of passthrough's maximum), open loop, with
`--latency-correction`, so a slow answer does not hide the requests that should have been
sent meanwhile (coordinated omission). Load generator, Envoy, the stand-in and the sink
share the machine's cores: absolute numbers are lower than on a dedicated host; the ratios,
taken in the same run, are the point.

Results: `bench/results/<UTC time>.json` and `.md`, copied to `latest.json` / `latest.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import BIN, ENVOY, WASM, free_port, require_built, run, wait_for  # noqa: E402

OHA = Path(os.environ.get("MERCATOR_OHA", ROOT / ".tools" / "bin" / "oha"))
LITELLM = Path(os.environ.get("MERCATOR_LITELLM", ROOT / ".venv-bench" / "bin" / "litellm"))
WORKLOAD = ROOT / "bench" / "workload.json"
PATH = "/v1/chat/completions"
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
CONNECTIONS = 16

# The issue's targets, checked in every run.
TARGET_OFF_THROUGHPUT = 0.9
TARGET_FULL_THROUGHPUT = 0.75
TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.0
TARGET_MEMORY_MB = 40.0
TARGET_WASM_MB = 3.0


class Services:
    """The processes of one run, stopped in reverse order whatever happens."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd=None):
        log = open(self.workdir / f"{name}.log", "wb")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.processes.append((name, process))
        return process

    def stop(self, process: subprocess.Popen) -> None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes = [(n, p) for n, p in self.processes if p is not process]

    def stop_all(self) -> None:
        for _, process in reversed(self.processes):
            self.stop(process)

    def log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def one_call(url: str, key: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url,
        data=WORKLOAD.read_bytes(),
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
    except urllib.error.HTTPError as error:
        return error.code, {}


def oha(url: str, key: str, seconds: float, rate: float | None) -> dict:
    """One oha run; `rate` None is closed loop (as fast as CONNECTIONS allow)."""
    args = [
        str(OHA), "--no-tui", "--output-format", "json",
        "-z", f"{seconds}s", "-c", str(CONNECTIONS),
        "-m", "POST", "-T", "application/json", "-H", f"authorization: Bearer {key}",
        "-D", str(WORKLOAD),
    ]  # fmt: skip
    if rate is not None:
        args += ["-q", f"{rate:.0f}", "--latency-correction"]
    output = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    report = json.loads(output)
    summary = report["summary"]
    percentiles = report["latencyPercentiles"]
    statuses = {str(k): v for k, v in (report.get("statusCodeDistribution") or {}).items()}
    ok = statuses.get("200", 0)
    # Requests still open when the duration ends are cut off by oha; they are not failures.
    failures = {
        kind: count
        for kind, count in (report.get("errorDistribution") or {}).items()
        if "deadline" not in kind
    }
    failures.update({f"status {k}": v for k, v in statuses.items() if k != "200"})
    errors = sum(failures.values())

    def ms(name: str) -> float | None:
        value = percentiles.get(name)
        return None if value is None else value * 1000

    return {
        "target_rps": rate,
        "seconds": seconds,
        # Only answers with status 200 count as throughput.
        "rps": ok / summary["total"] if summary.get("total") else 0.0,
        "ok": ok,
        "errors": errors,
        "error_kinds": failures,
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.out = Path(args.out)
        self.workdir = self.out / f"work-{self.stamp}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.services = Services(self.workdir)
        if args.smoke:
            self.warmup, self.max_seconds, self.rate_seconds = 0.5, 1.0, 1.0
            self.fractions = (0.5,)
        else:
            self.warmup, self.max_seconds, self.rate_seconds = 2.0, 8.0, 10.0
            self.fractions = FRACTIONS

    # ---- setup ---------------------------------------------------------------------

    def start_common(self) -> None:
        dev = self.workdir / "dev"
        run([str(BIN / "mercator"), "dev-init", "--dir", str(dev)])
        env_file = lambda name: dict(  # noqa: E731
            line.split("=", 1) for line in (dev / name).read_text().split() if "=" in line
        )
        self.finance_key = env_file("demo.env")["MERCATOR_DEMO_FINANCE_KEY"]
        provider = env_file("provider.env")
        self.provider_key = provider["OPENAI_API_KEY"]
        self.envoy_env = {
            "MERCATOR_SIGNING_KEY": (dev / "signing.key").read_text().strip(),
            "OPENAI_API_KEY": provider["OPENAI_API_KEY"],
            "ANTHROPIC_API_KEY": provider["ANTHROPIC_API_KEY"],
        }
        self.dev = dev

        self.sink_port, self.standin_port = free_port(), free_port()
        self.sink = self.services.spawn(
            "sink",
            [
                str(BIN / "evidence-sink"), "--listen", f"127.0.0.1:{self.sink_port}",
                "--db", str(self.workdir / "evidence.sqlite"), "--keys", str(dev / "sink-keys.json"),
                "--tree-key", str(dev / "sink-tree.key"),
            ],
        )  # fmt: skip
        self.standin = self.services.spawn(
            "standin",
            [
                str(BIN / "provider-standin"), "--listen", f"127.0.0.1:{self.standin_port}",
                "--expect-api-key", self.provider_key,
            ],
        )  # fmt: skip
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.sink_port}/healthz"), "the sink")
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{self.standin_port}/_standin/healthz"),
            "the stand-in",
        )

    def envoy_config(self, name: str, filter_mode: str | None) -> tuple[Path, int, int]:
        """Renders envoy/gateway.yaml for `filter_mode` (None, "off" or "full")."""
        gateway = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
        gateway["policies_dir"] = str(ROOT / "policies")
        gateway["api_key_files"] = [str(self.dev / "api-keys.yaml")]
        if filter_mode == "off":
            gateway["benchmark_passthrough"] = True
        gateway_file = self.workdir / f"gateway-{name}.yaml"
        gateway_file.write_text(json.dumps(gateway, indent=2))

        port, admin = free_port(), free_port()
        rendered = self.workdir / f"envoy-{name}.rendered.yaml"
        run(
            [
                str(BIN / "mercator"), "render", "--gateway", str(gateway_file),
                "--template", str(ROOT / "envoy" / "gateway.yaml"), "--out", str(rendered),
                "--set", "listen_address=127.0.0.1",
                "--set", f"gateway_port={port}", "--set", f"admin_port={admin}",
                "--set", "sink_host=127.0.0.1", "--set", f"sink_port={self.sink_port}",
                "--set", "provider_host=127.0.0.1", "--set", f"provider_port={self.standin_port}",
                "--set", f"tls_cert={self.dev / 'server.pem'}",
                "--set", f"tls_key={self.dev / 'server-key.pem'}",
                "--set", f"client_ca={self.dev / 'ca.pem'}",
                "--set", "require_client_certificate=false",
                "--set", f"wasm_path={WASM}",
            ]
        )  # fmt: skip

        config = yaml.safe_load(rendered.read_text())
        for listener in config["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                chain.pop("transport_socket", None)  # plain HTTP, as for every configuration
                if filter_mode is None:
                    for network_filter in chain["filters"]:
                        http = network_filter["typed_config"].get("http_filters", [])
                        http[:] = [f for f in http if f["name"] != "mercator"]
        path = self.workdir / f"envoy-{name}.yaml"
        path.write_text(json.dumps(config, indent=1))
        return path, port, admin

    def start_envoy(self, name: str, filter_mode: str | None):
        config, port, admin = self.envoy_config(name, filter_mode)
        process = self.services.spawn(
            name,
            [
                str(ENVOY), "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1",
                "--log-level", "warn", "--component-log-level", "wasm:warn",
            ],
            env=self.envoy_env,
        )  # fmt: skip
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), f"Envoy ({name})")
        except TimeoutError:
            raise RuntimeError(f"Envoy ({name}) did not start:\n{self.services.log_tail(name)}")
        return process, f"http://127.0.0.1:{port}{PATH}"

    def start_litellm(self):
        port = free_port()
        config = {
            "model_list": [
                {
                    "model_name": "gpt-4",
                    "litellm_params": {
                        "model": "openai/gpt-4",
                        "api_base": f"http://127.0.0.1:{self.standin_port}/v1",
                        "api_key": self.provider_key,
                    },
                }
            ],
            # Key auth without a database: LiteLLM's virtual keys need PostgreSQL, so the
            # caller presents the master key.
            "general_settings": {"master_key": "sk-bench-litellm-master"},
            # Request logging: one JSON line per request through a LiteLLM callback.
            "litellm_settings": {"callbacks": "request_log.request_logger"},
        }
        (self.workdir / "litellm.yaml").write_text(json.dumps(config, indent=1))
        shutil.copy(ROOT / "bench" / "litellm_request_log.py", self.workdir / "request_log.py")
        process = self.services.spawn(
            "litellm",
            [str(LITELLM), "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            env={
                "MERCATOR_BENCH_REQUEST_LOG": str(self.workdir / "litellm-requests.jsonl"),
                "PYTHONPATH": str(self.workdir),
                "LITELLM_LOG": "ERROR",
            },
            cwd=self.workdir,
        )  # fmt: skip
        try:
            wait_for(
                lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"),
                "LiteLLM",
                timeout=120,
            )
        except TimeoutError:
            raise RuntimeError(f"LiteLLM did not start:\n{self.services.log_tail('litellm')}")
        return process, f"http://127.0.0.1:{port}{PATH}", "sk-bench-litellm-master"

    # ---- measuring ------------------------------------------------------------------

    def check(self, name: str, url: str, key: str) -> None:
        status, headers = one_call(url, key)
        if status != 200:
            raise RuntimeError(f"{name}: the check request answered {status}, not 200")
        if name == "filter_full" and "x-mercator-evidence-id" not in headers:
            raise RuntimeError("filter_full: the answer carries no evidence id")

    def measure(
        self, name: str, url: str, key: str, rates: list[float] | None, pids: dict[str, int]
    ) -> dict:
        """The closed-loop maximum, then each fixed rate. `pids` names the processes whose
        CPU time per request is recorded during the closed-loop run (the proxy, the sink)."""
        self.check(name, url, key)
        if self.warmup:
            oha(url, key, self.warmup, None)
        print(f"  {name}: closed loop {self.max_seconds:.0f} s", flush=True)
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        maximum = oha(url, key, self.max_seconds, None)
        served = max(maximum["ok"], 1)
        maximum["cpu_us_per_request"] = {
            role: round((cpu_seconds(pid) - before[role]) / served * 1e6, 1)
            for role, pid in pids.items()
        }
        result = {"max": maximum, "rates": []}
        for rate in rates or []:
            print(f"  {name}: {rate:.0f} req/s for {self.rate_seconds:.0f} s", flush=True)
            result["rates"].append(oha(url, key, self.rate_seconds, rate))
        return result

    def run(self) -> dict:
        require_built()
        if not OHA.exists():
            raise RuntimeError(f"{OHA} is missing: run `make bench` (it installs oha)")
        results: dict = {"configurations": {}, "memory_mb": {}}
        configs = results["configurations"]
        try:
            self.start_common()

            print("passthrough: finding the maximum rate", flush=True)
            process, url = self.start_envoy("passthrough", None)
            configs["passthrough"] = self.measure(
                "passthrough", url, self.provider_key, None, {"proxy": process.pid}
            )
            max_rps = configs["passthrough"]["max"]["rps"]
            if max_rps <= 0:
                raise RuntimeError("passthrough served nothing; see the logs in " + str(self.workdir))
            rates = [round(max_rps * f) for f in self.fractions]
            results["rates"] = dict(zip([str(f) for f in self.fractions], rates))
            for rate in rates:
                print(f"  passthrough: {rate:.0f} req/s for {self.rate_seconds:.0f} s", flush=True)
                configs["passthrough"]["rates"].append(
                    oha(url, self.provider_key, self.rate_seconds, rate)
                )
            results["memory_mb"]["passthrough"] = rss_mb(process.pid)
            self.services.stop(process)

            print("standin (direct)", flush=True)
            standin_url = f"http://127.0.0.1:{self.standin_port}{PATH}"
            configs["standin"] = self.measure(
                "standin", standin_url, self.provider_key, rates, {"standin": self.standin.pid}
            )

            print("filter_off: filter loaded, benchmark_passthrough", flush=True)
            process, url = self.start_envoy("filter_off", "off")
            configs["filter_off"] = self.measure(
                "filter_off", url, self.provider_key, rates, {"proxy": process.pid}
            )
            results["memory_mb"]["filter_off"] = rss_mb(process.pid)
            self.services.stop(process)

            print("filter_full: auth, validation, policy, signed evidence to the sink", flush=True)
            process, url = self.start_envoy("filter_full", "full")
            configs["filter_full"] = self.measure(
                "filter_full", url, self.finance_key, rates,
                {"proxy": process.pid, "sink": self.sink.pid},
            )  # fmt: skip
            results["memory_mb"]["filter_full"] = rss_mb(process.pid)
            self.services.stop(process)
            results["evidence_records_stored"] = self.stored_records()

            if self.args.peers:
                print("litellm", flush=True)
                process, url, key = self.start_litellm()
                configs["litellm"] = self.measure("litellm", url, key, rates, {"proxy": process.pid})
                results["memory_mb"]["litellm"] = rss_mb(process.pid)
                self.services.stop(process)
                log = self.workdir / "litellm-requests.jsonl"
                results["litellm_logged_requests"] = (
                    len(log.read_text().splitlines()) if log.exists() else 0
                )
        finally:
            self.services.stop_all()
        results["wasm_bytes"] = WASM.stat().st_size
        results["micro_benchmarks_us"] = {} if self.args.smoke else micro_benchmarks()
        results["wasm_steps_us"] = {} if self.args.smoke else wasm_steps()
        results["machine"] = machine()
        results["settings"] = {
            "connections": CONNECTIONS,
            "envoy_concurrency": 1,
            "transport": "plain HTTP on loopback for every configuration",
            "closed_loop_seconds": self.max_seconds,
            "rate_seconds": self.rate_seconds,
            "smoke": self.args.smoke,
            "workload": "POST /v1/chat/completions, bench/workload.json "
            f"({WORKLOAD.stat().st_size} bytes), model gpt-4, non-streaming",
            "oha": run([str(OHA), "--version"]).strip(),
        }
        results["time"] = self.stamp
        results["targets"] = targets(results)
        return results

    def stored_records(self) -> int | None:
        """How many records the sink holds, read from its SQLite file after the run."""
        import sqlite3

        time.sleep(1.0)  # the filter flushes its queue every 200 ms
        try:
            with sqlite3.connect(self.workdir / "evidence.sqlite") as db:
                return db.execute("select count(*) from evidence").fetchone()[0]
        except sqlite3.Error:
            return None


def micro_benchmarks() -> dict[str, float]:
    """Criterion's median per benchmark, in microseconds, from `make bench-micro`'s run."""
    found = {}
    for estimates in sorted((ROOT / "target" / "criterion").glob("**/new/estimates.json")):
        benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
        median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        found[benchmark["full_id"]] = round(median_ns / 1000, 2)
    return found


def wasm_steps() -> dict[str, float]:
    """The same steps timed in Node's V8, from `make bench-wasm`'s run, if there was one."""
    path = ROOT / "bench" / "results" / "wasm-steps.jsonl"
    if not path.exists():
        return {}
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {step["step"]: step["us"] for step in steps}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


def at_fraction(config: dict, results: dict, fraction: float) -> dict | None:
    rates = list(results["rates"].values())
    target = results["rates"].get(str(fraction))
    if target is None:
        return None
    index = rates.index(target)
    runs = config.get("rates", [])
    return runs[index] if index < len(runs) else None


def targets(results: dict) -> list[dict]:
    configs = results["configurations"]
    base = configs["passthrough"]
    checks = []

    def check(name, value, limit, higher_is_better, unit=""):
        met = value is not None and (value >= limit if higher_is_better else value <= limit)
        checks.append(
            {"target": name, "measured": value, "limit": limit, "unit": unit, "met": met}
        )

    ratio = lambda c: configs[c]["max"]["rps"] / base["max"]["rps"]  # noqa: E731
    check("filter off: throughput / passthrough", ratio("filter_off"), TARGET_OFF_THROUGHPUT, True)
    check("full filter: throughput / passthrough", ratio("filter_full"), TARGET_FULL_THROUGHPUT, True)
    half_base = at_fraction(base, results, 0.5)
    half_full = at_fraction(configs["filter_full"], results, 0.5)
    if half_base and half_full:
        check("full filter: added p50 at half max", half_full["p50_ms"] - half_base["p50_ms"],
              TARGET_ADDED_P50_MS, False, "ms")  # fmt: skip
        check("full filter: added p99 at half max", half_full["p99_ms"] - half_base["p99_ms"],
              TARGET_ADDED_P99_MS, False, "ms")  # fmt: skip
    memory = results["memory_mb"]
    check("full filter: RSS - passthrough RSS", memory["filter_full"] - memory["passthrough"],
          TARGET_MEMORY_MB, False, "MB")  # fmt: skip
    check(".wasm size", results["wasm_bytes"] / 1024 / 1024, TARGET_WASM_MB, False, "MB")
    return checks


def fmt(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    configs = results["configurations"]
    base_max = configs["passthrough"]["max"]["rps"]
    order = [c for c in ("standin", "passthrough", "filter_off", "filter_full", "litellm") if c in configs]
    lines = [
        "| configuration | max req/s | × passthrough | RSS MB | CPU µs/request |",
        "|---|---:|---:|---:|---|",
    ]
    for name in order:
        maximum = configs[name]["max"]
        rss = results["memory_mb"].get(name)
        cpu = ", ".join(f"{role} {us:.0f}" for role, us in maximum["cpu_us_per_request"].items())
        lines.append(
            f"| {name} | {maximum['rps']:.0f} | {maximum['rps'] / base_max:.2f} | {fmt(rss, 0)} "
            f"| {cpu} |"
        )
    lines += [
        "",
        "| configuration | offered req/s | served req/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in order:
        for run_ in configs[name]["rates"]:
            lines.append(
                f"| {name} | {run_['target_rps']:.0f} | {run_['rps']:.0f} | {fmt(run_['p50_ms'])} "
                f"| {fmt(run_['p99_ms'])} | {fmt(run_['p999_ms'])} | {run_['errors']} |"
            )
    lines += ["", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for t in results["targets"]:
        lines.append(
            f"| {t['target']} | {fmt(t['measured'])} {t['unit']} | {t['limit']} {t['unit']} "
            f"| {'yes' if t['met'] else '**no**'} |"
        )
    native, wasm = results.get("micro_benchmarks_us", {}), results.get("wasm_steps_us", {})
    if native or wasm:
        lines += [
            "",
            "| step, per request | native µs (criterion median) | wasm in Node's V8 µs |",
            "|---|---:|---:|",
        ]
        for name in sorted(set(native) | set(wasm)):
            lines.append(f"| {name} | {fmt(native.get(name))} | {fmt(wasm.get(name))} |")
    m = results["machine"]
    lines += [
        "",
        f"Run {results['time']} on {m['nproc']} cores ({m['cpu']}), {m['memory_gb']} GB, "
        f"kernel {m['kernel']}; {results['settings']['oha']}; Envoy 1.40 with one worker; "
        f"{results['settings']['transport']}; `.wasm` {results['wasm_bytes'] / 1024 / 1024:.2f} MB"
        + (" (smoke run: numbers mean nothing)" if results["settings"]["smoke"] else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="about a second per run: checks the bench works")
    parser.add_argument("--peers", action="store_true", help="also measure the LiteLLM proxy")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    bench = Bench(args)
    try:
        results = bench.run()
    except Exception:
        print(f"the bench failed; services' logs are in {bench.workdir}", file=sys.stderr)
        raise
    shutil.rmtree(bench.workdir, ignore_errors=True)

    table = markdown(results)
    out = Path(args.out)
    name = "smoke" if args.smoke else results["time"]
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    if not args.smoke:
        shutil.copy(out / f"{name}.json", out / "latest.json")
        shutil.copy(out / f"{name}.md", out / "latest.md")
    print()
    print(table)
    print(f"results: {out / name}.json and .md")

    failed = [
        name
        for name, config in results["configurations"].items()
        for run_ in [config["max"], *config["rates"]]
        if run_["ok"] == 0
    ]
    if failed:
        print(f"no successful answers from: {', '.join(sorted(set(failed)))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
