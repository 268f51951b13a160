"""Stripe-Signature verification against the stripe-dotnet vector and the stripe package."""

from typing import Any

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from tests.fixture_files import fixture_bytes, fixture_json
from worker.signing.errors import SignatureError
from worker.signing.stripe import sign_stripe, verify_stripe

VECTOR: dict[str, Any] = fixture_json("stripe/signature/vector.json")
BODY = fixture_bytes("stripe/signature/" + VECTOR["payload_file"])
SECRET: str = VECTOR["secret"]
TIMESTAMP: int = VECTOR["timestamp"]
HEADER: str = VECTOR["header"]
EXPECTED_V1: str = VECTOR["expected_v1"]
DECOY_V0 = HEADER.split(",v0=")[1]
MALFORMED: dict[str, Any] = next(
    case for case in VECTOR["negative_cases"] if case["what"] == "malformed headers"
)
REASONS = {
    "missing Stripe-Signature header",
    "malformed Stripe-Signature header",
    "no v1 signature in Stripe-Signature header",
    "timestamp outside the tolerance",
    "body is not valid UTF-8",
    "no valid signature",
}


def reason_of(body: bytes, header: str | None, secrets: list[str], now: int) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_stripe(body, header, secrets, now)
    return caught.value.reason


def test_vector_header_verifies() -> None:
    verify_stripe(BODY, HEADER, [SECRET], now=TIMESTAMP)


def test_vector_body_is_the_exact_signed_bytes() -> None:
    assert len(BODY) == 484
    assert BODY.endswith(b"}\n")


def test_sign_stripe_reproduces_the_vector_signature() -> None:
    assert sign_stripe(BODY, SECRET, TIMESTAMP) == f"t={TIMESTAMP},v1={EXPECTED_V1}"


def test_decoy_v0_signature_is_ignored() -> None:
    verify_stripe(BODY, f"t={TIMESTAMP},v0={DECOY_V0},v1={EXPECTED_V1}", [SECRET], TIMESTAMP)


def test_header_with_only_a_v0_signature_is_rejected() -> None:
    reason = reason_of(BODY, f"t={TIMESTAMP},v0={DECOY_V0}", [SECRET], TIMESTAMP)
    assert reason == "no v1 signature in Stripe-Signature header"


def test_a_v0_signature_with_the_right_value_does_not_count_as_v1() -> None:
    reason = reason_of(BODY, f"t={TIMESTAMP},v0={EXPECTED_V1}", [SECRET], TIMESTAMP)
    assert reason == "no v1 signature in Stripe-Signature header"


@pytest.mark.parametrize(
    "case", VECTOR["tolerance_cases"], ids=lambda case: f"now={case['now']}-{case['expect']}"
)
def test_vector_tolerance_cases(case: dict[str, Any]) -> None:
    def verify() -> None:
        verify_stripe(BODY, HEADER, [SECRET], now=case["now"], tolerance=case["tolerance_s"])

    if case["expect"] == "valid":
        verify()
    else:
        with pytest.raises(SignatureError) as caught:
            verify()
        assert caught.value.reason == "timestamp outside the tolerance"


@pytest.mark.parametrize("offset", [-300, 0, 300], ids=["300s-ahead", "now", "300s-old"])
def test_timestamp_within_tolerance_in_either_direction_verifies(offset: int) -> None:
    verify_stripe(BODY, HEADER, [SECRET], now=TIMESTAMP + offset, tolerance=300)


@pytest.mark.parametrize("offset", [-301, 301], ids=["301s-ahead", "301s-old"])
def test_timestamp_beyond_tolerance_in_either_direction_is_rejected(offset: int) -> None:
    assert reason_of(BODY, HEADER, [SECRET], now=TIMESTAMP + offset) == (
        "timestamp outside the tolerance"
    )


def test_future_timestamp_is_rejected_even_with_a_valid_signature() -> None:
    header = sign_stripe(BODY, SECRET, TIMESTAMP + 3600)
    assert reason_of(BODY, header, [SECRET], now=TIMESTAMP) == "timestamp outside the tolerance"


def test_altered_payload_is_rejected() -> None:
    altered = BODY + b"this_changes_the_json"
    assert reason_of(altered, HEADER, [SECRET], TIMESTAMP) == "no valid signature"


@pytest.mark.parametrize("header", MALFORMED["headers"])
def test_malformed_vector_header_is_rejected(header: str) -> None:
    # The vector pairs these with secret "", which we refuse as a configuration error
    # (test_empty_secret_is_a_configuration_error); the header is what is under test.
    body = MALFORMED["payload"].encode()
    assert reason_of(body, header, [SECRET], TIMESTAMP) == "malformed Stripe-Signature header"


@pytest.mark.parametrize(
    "header",
    [
        f"t=1_533_204_620,v1={EXPECTED_V1}",
        f"t=+{TIMESTAMP},v1={EXPECTED_V1}",
        f"t= {TIMESTAMP},v1={EXPECTED_V1}",
        f"t={TIMESTAMP}.0,v1={EXPECTED_V1}",
        f"t=-{TIMESTAMP},v1={EXPECTED_V1}",
        f"t={TIMESTAMP},t={TIMESTAMP},v1={EXPECTED_V1}",
        f"t={TIMESTAMP},v1={EXPECTED_V1},",
        f"v1={EXPECTED_V1}",
        "t=" + "9" * 5000 + f",v1={EXPECTED_V1}",
    ],
    ids=[
        "underscores",
        "plus-sign",
        "leading-space",
        "fraction",
        "negative",
        "two-timestamps",
        "trailing-comma",
        "no-timestamp",
        "5000-digit-timestamp",
    ],
)
def test_timestamp_that_is_not_plain_digits_is_rejected_as_malformed(header: str) -> None:
    assert reason_of(BODY, header, [SECRET], TIMESTAMP) == "malformed Stripe-Signature header"


def test_wrong_v1_among_several_does_not_hide_the_right_one() -> None:
    header = f"t={TIMESTAMP},v1={'0' * 64},v1={EXPECTED_V1}"
    verify_stripe(BODY, header, [SECRET], TIMESTAMP)


def test_non_ascii_signature_is_rejected_without_crashing() -> None:
    header = f"t={TIMESTAMP},v1=é{EXPECTED_V1[1:]}"
    assert reason_of(BODY, header, [SECRET], TIMESTAMP) == "no valid signature"


def test_signature_with_trailing_text_is_rejected() -> None:
    header = f"t={TIMESTAMP},v1={EXPECTED_V1}=junk"
    assert reason_of(BODY, header, [SECRET], TIMESTAMP) == "no valid signature"


def test_rotation_accepts_the_signature_of_any_configured_secret() -> None:
    verify_stripe(BODY, HEADER, ["whsec_new_secret_not_yet_used", SECRET], TIMESTAMP)
    verify_stripe(BODY, HEADER, [SECRET, "whsec_new_secret_not_yet_used"], TIMESTAMP)


def test_wrong_secret_is_rejected() -> None:
    assert reason_of(BODY, HEADER, ["whsec_wrong"], TIMESTAMP) == "no valid signature"


@pytest.mark.parametrize("header", [None, ""], ids=["absent", "empty"])
def test_missing_header_is_rejected(header: str | None) -> None:
    assert reason_of(BODY, header, [SECRET], TIMESTAMP) == "missing Stripe-Signature header"


def test_non_utf8_body_is_rejected() -> None:
    assert reason_of(b"\xff\xfe{}", HEADER, [SECRET], TIMESTAMP) == "body is not valid UTF-8"


@pytest.mark.parametrize("secrets", [[], [""], [SECRET, " "]], ids=["none", "empty", "blank"])
def test_empty_secret_is_a_configuration_error(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="secret"):
        verify_stripe(BODY, HEADER, secrets, TIMESTAMP)


def test_a_single_string_instead_of_a_list_of_secrets_is_refused() -> None:
    with pytest.raises(TypeError):
        verify_stripe(BODY, HEADER, SECRET, TIMESTAMP)


@pytest.mark.parametrize(
    "event",
    ["payment_intent.succeeded.json", "charge.refunded.json", "checkout.session.completed.json"],
)
def test_signed_event_round_trips(event: str) -> None:
    body = fixture_bytes(f"stripe/events/{event}")
    header = sign_stripe(body, "whsec_test", 1_700_000_000)
    verify_stripe(body, header, ["whsec_test"], now=1_700_000_000)


UTF8_TEXT = st.text(alphabet=st.characters(codec="utf-8"))


@given(body=UTF8_TEXT, secret=UTF8_TEXT.filter(lambda secret: secret.strip() != ""))
def test_sign_stripe_agrees_with_the_stripe_package(body: str, secret: str) -> None:
    header = sign_stripe(body.encode(), secret, TIMESTAMP)
    assert header == stripe.WebhookSignature.generate_signature_header(body, secret, TIMESTAMP)
    assert stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)


def stripe_headers() -> st.SearchStrategy[str]:
    item = st.one_of(
        st.just(f"t={TIMESTAMP}"),
        st.just(f"v1={EXPECTED_V1}"),
        st.just(f"v0={DECOY_V0}"),
        st.builds("{}={}".format, st.sampled_from(["t", "v1", "v0", ""]), st.text(max_size=70)),
        st.text(max_size=20),
    )
    return st.one_of(st.text(), st.lists(item, max_size=6).map(",".join))


@given(body=st.one_of(st.binary(), st.just(BODY)), header=st.one_of(st.none(), stripe_headers()))
def test_arbitrary_input_raises_nothing_but_a_signature_error(
    body: bytes, header: str | None
) -> None:
    try:
        verify_stripe(body, header, [SECRET], TIMESTAMP)
    except SignatureError as err:
        assert err.reason in REASONS
        assert str(err) == err.reason
