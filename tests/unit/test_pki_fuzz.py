"""Property: no bytes in a Secret make the readers raise anything but their own typed errors.

Fed into ``tls.crt``, ``tls.key`` or ``ca.crt`` next to otherwise healthy material: random bytes, random
DER inside PEM armour, truncated prefixes of real PEM and DER, bit flips in real DER re-armoured as PEM
(so the ASN.1 and extension parsers see almost-valid input), and a bounded sample of the certificate and
key files shipped in ``cryptography_vectors``. ``inspect_tls_secret`` may only raise
:class:`TLSMaterialError` and ``load_ca`` only :class:`CAError`, each with a sentence free of the bytes.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.pki_factory import (
    ECDSA_P256,
    ED25519,
    MLDSA_65,
    RSA_2048,
    issue,
    key,
    key_pem,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import CAError, TLSMaterialError
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki import certs, keys, material

SLOTS = ("tls.crt", "tls.key", "ca.crt")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTOR_SAMPLE_SIZE = 300
VECTOR_MAX_BYTES = 64 * 1024

# Some shipped vectors are deliberately malformed in ways the library still accepts, with a warning.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")


def _vector_files() -> list[Path]:
    """A fixed sample of the x509 and asymmetric-key files shipped in cryptography_vectors."""
    root = Path(cryptography_vectors.__file__).parent
    files = sorted(
        path
        for area in ("x509", "asymmetric")
        for path in (root / area).rglob("*")
        if path.suffix in {".pem", ".der", ".crt", ".key", ".pub"} and path.stat().st_size <= VECTOR_MAX_BYTES
    )
    return random.Random(20260301).sample(files, min(VECTOR_SAMPLE_SIZE, len(files)))


VECTOR_FILES = _vector_files()
CA = self_signed_ca(ECDSA_P256)
HEALTHY = (issue(CA), issue(CA, MLDSA_65), issue(CA, RSA_2048), issue(CA, ED25519))


def _armour(label: bytes, der: bytes) -> bytes:
    body = base64.b64encode(der)
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN " + label + b"-----\n" + lines + b"\n-----END " + label + b"-----\n"


def _der_of(secret_data: dict[str, bytes], slot: str) -> tuple[bytes, bytes]:
    """(PEM label, DER) of the first PEM block in a slot of healthy material."""
    text = secret_data[slot]
    label = text.split(b"-----")[1].removeprefix(b"BEGIN ")
    body = text.split(b"-----")[2]
    return label, base64.b64decode(b"".join(body.split()))


REAL_DER = [(slot, *_der_of(data, slot)) for data in HEALTHY for slot in SLOTS] + [
    ("tls.key", b"PRIVATE KEY", base64.b64decode(b"".join(key_pem(MLDSA_65).split(b"\n")[1:-2])))
]
REAL_BYTES = [data[slot] for data in HEALTHY for slot in SLOTS] + [der for _, _, der in REAL_DER]


def assert_only_typed_errors(data: dict[str, bytes], payload: bytes) -> None:
    """The property, for both readers of Secret data."""
    try:
        material.inspect_tls_secret(data, CA)
    except TLSMaterialError as error:
        _assert_sentence(error.message, payload, error.reason)
    try:
        pki_ca.load_ca(data, certs.whole_seconds(CA.certificate.not_valid_before_utc))
    except CAError as error:
        _assert_sentence(error.message, payload)


def _assert_sentence(message: str, payload: bytes, reason: Reason | None = None) -> None:
    assert reason in {None, Reason.SECRET_CORRUPT, Reason.MISSING_DATA}
    assert message[:1].isupper() or message.startswith(("tls.", "ca.crt"))
    assert message.endswith(".")
    assert "-----BEGIN" not in message
    if len(payload) >= 16:
        assert payload[:16].decode("latin-1") not in message


slots = st.sampled_from(SLOTS)
healthy = st.sampled_from(HEALTHY)


@FUZZ
@given(healthy=healthy, slot=slots, payload=st.binary(max_size=4096))
def test_random_bytes(healthy: dict[str, bytes], slot: str, payload: bytes) -> None:
    assert_only_typed_errors({**healthy, slot: payload}, payload)


@FUZZ
@given(
    healthy=healthy,
    slot=slots,
    label=st.sampled_from([b"CERTIFICATE", b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"]),
    der=st.binary(min_size=1, max_size=2048),
)
def test_random_der_in_pem_armour(healthy: dict[str, bytes], slot: str, label: bytes, der: bytes) -> None:
    payload = _armour(label, der)
    assert_only_typed_errors({**healthy, slot: payload}, payload)


@FUZZ
@given(healthy=healthy, slot=slots, real=st.sampled_from(REAL_BYTES), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_real_material(healthy: dict[str, bytes], slot: str, real: bytes, cut: float) -> None:
    payload = real[: int(len(real) * cut)]
    assert_only_typed_errors({**healthy, slot: payload}, payload)


@FUZZ
@given(
    healthy=healthy,
    real=st.sampled_from(REAL_DER),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_bit_flips_in_real_der(
    healthy: dict[str, bytes], real: tuple[str, bytes, bytes], flips: list[tuple[float, int]]
) -> None:
    slot, label, der = real
    mutated = bytearray(der)
    for where, bit in flips:
        mutated[int(len(mutated) * where)] ^= 1 << bit
    payload = _armour(label, bytes(mutated))
    assert_only_typed_errors({**healthy, slot: payload}, payload)


@FUZZ
@given(
    healthy=healthy,
    real=st.sampled_from([data[slot] for data in HEALTHY for slot in SLOTS]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4),
    slot=slots,
)
def test_bit_flips_in_real_pem_text(
    healthy: dict[str, bytes], real: bytes, flips: list[tuple[float, int]], slot: str
) -> None:
    mutated = bytearray(real)
    for where, bit in flips:
        mutated[int(len(mutated) * where)] ^= 1 << bit
    assert_only_typed_errors({**healthy, slot: bytes(mutated)}, bytes(mutated))


@FUZZ
@given(healthy=healthy, slot=slots, path=st.sampled_from(VECTOR_FILES))
def test_cryptography_vector_files(healthy: dict[str, bytes], slot: str, path: Path) -> None:
    payload = path.read_bytes()
    assert_only_typed_errors({**healthy, slot: payload}, payload)


def test_every_sampled_vector_file_in_every_slot() -> None:
    """The same property, exhaustively over the fixed sample (hypothesis only draws some of it)."""
    failures: list[str] = []
    for path in VECTOR_FILES:
        payload = path.read_bytes()
        for slot in SLOTS:
            try:
                assert_only_typed_errors({**HEALTHY[0], slot: payload}, payload)
            except Exception as error:  # collect them all, then report
                failures.append(f"{path.name} in {slot}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures[:20])
    assert len(VECTOR_FILES) >= 100


def test_vector_certificates_that_parse_also_describe() -> None:
    """Every sampled vector certificate cert_facts can describe, it describes with typed errors only."""
    described = 0
    for path in VECTOR_FILES:
        try:
            parsed = certs.parse_certificate_pem(path.read_bytes())
        except TLSMaterialError:
            continue
        for cert in parsed:
            try:
                certs.cert_facts(cert, parsed)
                described += 1
            except TLSMaterialError:
                pass
    assert described > 0


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            _armour(b"CERTIFICATE", random.Random(1).randbytes(3_000_000)),
            id="survives 3 MB of armoured noise",
        ),
        pytest.param(b"-----BEGIN CERTIFICATE-----\n" * 100_000, id="survives 100k unterminated PEM headers"),
        pytest.param("é漢字🔑".encode() * 10_000, id="survives non-ASCII UTF-8"),
        pytest.param(b"\x00" * 1_000_000, id="survives a megabyte of zeros"),
    ],
)
@pytest.mark.parametrize("slot", SLOTS)
def test_huge_and_odd_inputs(slot: str, payload: bytes) -> None:
    assert_only_typed_errors({**HEALTHY[0], slot: payload}, payload)


def test_the_leaf_key_is_not_in_any_error_message() -> None:
    leaf_key = keys.private_key_to_pem(key(ECDSA_P256))
    pem_body = leaf_key.split(b"\n")[1].decode()
    damaged = {**HEALTHY[0], "tls.crt": HEALTHY[0]["tls.crt"][:300]}
    with pytest.raises(TLSMaterialError) as caught:
        material.inspect_tls_secret(damaged, CA)
    assert pem_body not in caught.value.message
    assert CA.certificate.public_bytes(Encoding.PEM).decode()[30:60] not in caught.value.message
