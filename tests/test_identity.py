"""Who is calling: TLS 1.3 suites, mTLS identities, API key rotation, spoofed identity
headers, hostile credentials and secrets in logs, through a real Envoy with real TLS clients.

The session's `stack` authenticates by API key and accepts (but does not require) client
certificates. The module's `mtls` stack requires a client certificate at the handshake
and, in `either` mode, takes an API key when one is presented, else the certificate.
"""

import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from support import BIN, Stack, run, start_stack
from test_gateway import CHAT, recorded_once

BILLING = "spiffe://mercator.test/ns/prod/sa/billing"
PROBE = "probe-identity"

# Denies one marked prompt with a reason built from the policy input, so a test can read
# what the policy saw of the caller's identity.
PROBE_POLICY = """
package mercator.policy.identity_probe

import rego.v1

default allow := true

deny contains sprintf("user=%s department=%s method=%s uri_san=%s source=%v", [
	input.request.user.id,
	input.request.user.department,
	input.request.auth.method,
	input.request.auth.certificate.uri_san,
	input.request.source_address != null,
]) if {
	input.request.messages[0].text == "probe-identity"
}
"""


@pytest.fixture(scope="module")
def mtls(tmp_path_factory) -> Stack:
    running = start_stack(
        tmp_path_factory.mktemp("mtls"),
        identity={
            "mode": "either",
            "clients": [
                {
                    "spiffe_id": BILLING,
                    "user_id": "billing-service",
                    "name": "billing-prod",
                    "attributes": {"department": "finance"},
                }
            ],
        },
        require_client_certificate=True,
        extra_policies={"identity_probe.rego": PROBE_POLICY},
        disabled_keys=("rotated-old",),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def certs(mtls: Stack) -> dict[str, tuple[Path, Path]]:
    """Client certificates: issued by the gateway's CA (mapped, unmapped without a SAN,
    expired) and by a CA the gateway does not trust."""
    dev = mtls.workdir / "dev"
    out = mtls.workdir / "clients"
    mercator = str(BIN / "mercator")

    def client(name: str, *extra: str, ca_dir: Path = dev) -> tuple[Path, Path]:
        run([mercator, "cert", "client", "--ca-dir", str(ca_dir), "--out-dir", str(out),
             "--name", name, *extra])  # fmt: skip
        return out / f"{name}.pem", out / f"{name}-key.pem"

    foreign = mtls.workdir / "foreign-ca"
    run([mercator, "cert", "ca", "--out-dir", str(foreign)])
    return {
        "billing": client("billing", "--spiffe-id", BILLING),
        "no-san": client("no-san"),
        "expired": client("expired", "--spiffe-id", BILLING, "--days", "-1"),
        "foreign": client("foreign", "--spiffe-id", BILLING, ca_dir=foreign),
    }


def handshake_and_request(stack: Stack, cert: tuple[Path, Path] | None) -> bytes:
    """A TLS 1.3 connection and one HTTP/1.1 request; the server's first bytes. With TLS
    1.3 the client's handshake can finish before the server has checked its certificate,
    so a refusal may show only when the client reads."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\n\r\n")
            return tls.recv(1024)


# --- transport ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
)
def test_each_tls_1_3_suite_is_accepted(stack: Stack, suite: str):
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{stack.gateway_port}",
         "-servername", "localhost", "-CAfile", str(stack.ca_file), "-tls1_3",
         "-ciphersuites", suite, "-verify_return_error", "-brief"],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip

    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert "Protocol version: TLSv1.3" in output, output
    assert f"Ciphersuite: {suite}" in output, output


@pytest.mark.parametrize("label", [None, "foreign", "expired"])
def test_mtls_refuses_at_the_handshake_without_a_trusted_valid_certificate(
    mtls: Stack, certs, label
):
    cert = certs[label] if label else None
    before = len(mtls.provider_requests())

    with pytest.raises((ssl.SSLError, ConnectionError)):
        answer = handshake_and_request(mtls, cert)
        # A closed connection with no answer is a refusal too.
        if not answer:
            raise ConnectionResetError("closed without an answer")

    assert len(mtls.provider_requests()) == before


# --- identity from a certificate ---------------------------------------------------------


def test_a_good_client_certificate_identifies_the_caller_in_evidence(mtls: Stack, certs):
    reply = mtls.call(CHAT, client_cert=certs["billing"])

    assert reply.status == 200, reply.body
    record = recorded_once(mtls, reply)
    assert record["user_id"] == "billing-service"
    assert record["auth"]["method"] == "certificate"
    assert record["auth"]["result"] == "authenticated"
    assert record["auth"]["key_name"] == "billing-prod"
    assert record["auth"]["certificate"]["uri_san"] == BILLING
    assert "CN=billing" in record["auth"]["certificate"]["subject"]
    assert record["auth"]["source_address"].startswith("127.0.0.1:")


def test_the_policy_input_carries_the_certificate_identity(mtls: Stack, certs):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": PROBE}]}

    reply = mtls.call(body, client_cert=certs["billing"])

    assert reply.status == 403, reply.body
    assert reply.json()["error"]["message"] == (
        f"user=billing-service department=finance method=certificate uri_san={BILLING} "
        "source=true"
    )
    assert recorded_once(mtls, reply)["decision"] == "deny"


def test_a_certificate_without_a_san_that_no_client_maps_gets_401(mtls: Stack, certs):
    reply = mtls.call(CHAT, client_cert=certs["no-san"])

    assert reply.status == 401, reply.body
    assert reply.json()["error"]["code"] == "unknown_client_certificate"
    record = recorded_once(mtls, reply)
    assert record["decision"] == "unauthenticated"
    assert record["auth"]["result"] == "unknown_certificate"
    assert record["auth"]["certificate"]["uri_san"] is None


def test_spoofed_identity_headers_have_no_effect(mtls: Stack, certs):
    marker = "marker-for-spoofed-identity"
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": marker}]}
    spoof = {
        "x-mercator-user-id": "ceo",
        "x-mercator-auth-method": "api_key",
        "x-forwarded-client-cert": f"URI={BILLING}",
    }

    reply = mtls.call(body, client_cert=certs["no-san"], headers=spoof)

    assert reply.status == 401, reply.body
    record = recorded_once(mtls, reply)
    assert record["user_id"] is None
    reply = mtls.call(body, client_cert=certs["billing"], headers=spoof)
    assert reply.status == 200, reply.body
    assert recorded_once(mtls, reply)["user_id"] == "billing-service"
    [seen] = [r for r in mtls.provider_requests() if marker in r["body"]]
    names = {name for name, _ in seen["headers"]}
    assert not {name for name in names if name.startswith("x-mercator-")}
    assert "x-forwarded-client-cert" not in names


# --- API keys ------------------------------------------------------------------------------


def test_a_presented_key_is_used_beside_a_certificate_and_a_retired_key_is_refused(
    mtls: Stack, certs
):
    new = mtls.call(CHAT, key=mtls.keys["rotated-new"].key, client_cert=certs["billing"])
    old = mtls.call(CHAT, key=mtls.keys["rotated-old"].key, client_cert=certs["billing"])

    assert new.status == 200, new.body
    record = recorded_once(mtls, new)
    assert (record["user_id"], record["auth"]["key_name"]) == ("rota", "rota-2026")
    assert old.status == 401, old.body
    assert old.json()["error"]["code"] == "api_key_disabled"
    assert recorded_once(mtls, old)["auth"]["key_name"] == "rota-2025"


def test_an_attempt_is_logged_with_the_key_redacted_and_the_reason(stack: Stack):
    key = stack.keys["disabled"].key

    reply = stack.call(CHAT, key=key)

    assert reply.status == 401
    redacted = f"{key[:4]}…{key[-4:]}"
    lines = [
        line
        for line in (stack.workdir / "envoy.log").read_text(errors="replace").splitlines()
        if reply.evidence_id in line
    ]
    assert len(lines) == 1, lines
    for part in (
        "user.id=-",
        "auth.result=disabled",
        f"auth.key={redacted}",
        "auth.key_name=disabled-key",
        "source.address=127.0.0.1:",
    ):
        assert part in lines[0], (part, lines[0])


def raw_request(stack: Stack, head: bytes) -> tuple[int, bytes]:
    """Sends `head` (request line and headers) with CHAT as body over HTTP/1.1."""
    body = json.dumps(CHAT).encode()
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                head + b"content-type: application/json\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
            )
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


@pytest.mark.parametrize(
    "label, headers",
    [
        ("two authorization headers",
         [b"authorization: Bearer a\r\n", b"authorization: Bearer b\r\n"]),
        ("an empty bearer", [b"authorization: Bearer \r\n"]),
        ("a key with whitespace", [b"authorization: Bearer mj_abc def\r\n"]),
        ("a key with non-ASCII bytes", [b"authorization: Bearer mj_\xc3\xa9t\xc3\xa9\r\n"]),
        ("a 10 kB key", [b"authorization: Bearer mj_" + b"k" * 10_240 + b"\r\n"]),
        ("a 10 kB x-api-key", [b"x-api-key: " + b"k" * 10_240 + b"\r\n"]),
        ("a key in both headers", [b"authorization: Bearer a\r\n", b"x-api-key: a\r\n"]),
    ],
)  # fmt: skip
def test_hostile_credentials_get_401_with_evidence(stack: Stack, label, headers):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n" + b"".join(headers)

    status, answer = raw_request(stack, head)

    assert status == 401, (label, answer[:500])
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "invalid_request_error", body
    evidence_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in answer.split(b"\r\n")
        if line.lower().startswith(b"x-mercator-evidence-id:")
    )
    assert stack.evidence(evidence_id)["decision"] == "unauthenticated"


def test_secrets_never_appear_in_any_log(stack: Stack, mtls: Stack, certs):
    # Every kind of call, so that every log line the gateway writes has had its chance.
    stack.call(CHAT, key=stack.keys["finance"].key)
    stack.call(CHAT, key=stack.keys["expired"].key)
    stack.call({"model": 1}, key=stack.keys["engineering"].key)
    mtls.call(CHAT, client_cert=certs["billing"])
    mtls.call(CHAT, key=mtls.keys["rotated-old"].key, client_cert=certs["billing"])

    for running in (stack, mtls):
        secrets = {
            "signing key": running.signing_key,
            "provider key": running.provider_key,
            **{f"API key {label}": key.key for label, key in running.keys.items()},
            "client key": certs["billing"][1].read_text().splitlines()[1],
        }
        logs = {log.name: log.read_text(errors="replace") for log in running.workdir.glob("*.log")}
        assert set(logs) == {"envoy.log", "sink.log", "standin.log"}
        for log, text in logs.items():
            for what, secret in secrets.items():
                assert secret not in text, f"{what} appears in {log}"
