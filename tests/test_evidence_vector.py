"""The Rust crate's fixed signing vector, checked with independent code.

`crates/evidence/testdata/signed-record.json` is what `EvidenceRecord::sign` produces for
a sample record with the seed of 32 bytes of 42. If this passes, a record signed by the
gateway verifies with any RFC 8785 and Ed25519 implementation, as the crate docs promise.
"""

import base64
import hashlib
import json

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support import ROOT, verify_independently

VECTOR = ROOT / "crates" / "evidence" / "testdata" / "signed-record.json"


def test_fixed_vector_verifies_with_independent_rfc8785_and_ed25519():
    record = json.loads(VECTOR.read_text())
    public = Ed25519PrivateKey.from_private_bytes(bytes([42] * 32)).public_key()
    raw = public.public_bytes_raw()

    assert record["key_id"] == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    assert verify_independently(record, {record["key_id"]: raw})


def test_the_signed_text_is_itself_canonical():
    text = VECTOR.read_text().strip()

    assert rfc8785.dumps(json.loads(text)).decode() == text


def test_changing_one_member_breaks_the_vector():
    record = json.loads(VECTOR.read_text())
    raw = Ed25519PrivateKey.from_private_bytes(bytes([42] * 32)).public_key().public_bytes_raw()
    record["cost"] = 0

    assert not verify_independently(record, {record["key_id"]: raw})
    assert base64.b64decode(record["signature"])  # still well-formed, just wrong
