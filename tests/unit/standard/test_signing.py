"""Standard Webhooks verification against the standard-webhooks vectors and library."""

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tests.fixture_files import fixture_json
from worker.signing.errors import SignatureError
from worker.signing.standard import sign_standard, verify_standard

VECTORS: dict[str, Any] = fixture_json("standardwebhooks/vectors.json")
SIGN: dict[str, Any] = VECTORS["sign_vector"]
SECRET: str = SIGN["secret"]
MSG_ID: str = SIGN["msg_id"]
TIMESTAMP: int = SIGN["timestamp"]
BODY: bytes = SIGN["payload"].encode()
HEADERS: dict[str, str] = SIGN["headers"]
HEADER_NAMES = ["webhook-id", "webhook-timestamp", "webhook-signature"]
UNPADDED: list[dict[str, Any]] = VECTORS["unpadded_secret_cases"]["secrets"]
REASONS = {
    "missing webhook-id header",
    "missing webhook-timestamp header",
    "missing webhook-signature header",
    "malformed webhook-id header",
    "malformed webhook-timestamp header",
    "no v1 signature in webhook-signature header",
    "timestamp outside the tolerance",
    "body is not valid UTF-8",
    "no valid signature",
}


def with_header(name: str, value: str) -> dict[str, str]:
    return {**HEADERS, name: value}


def reason_of(
    body: bytes, headers: dict[str, str], secrets: list[str] | None = None, now: int = TIMESTAMP
) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_standard(body, headers, [SECRET] if secrets is None else secrets, now)
    return caught.value.reason


def test_sign_standard_reproduces_the_vector_headers() -> None:
    assert sign_standard(BODY, MSG_ID, SECRET, TIMESTAMP) == HEADERS
    assert HEADERS["webhook-signature"] == SIGN["expected_signature"]


def test_vector_headers_verify_and_return_the_webhook_id() -> None:
    assert verify_standard(BODY, HEADERS, [SECRET], now=TIMESTAMP) == MSG_ID


def test_secret_verifies_without_its_whsec_prefix() -> None:
    assert verify_standard(BODY, HEADERS, [SECRET.removeprefix("whsec_")], TIMESTAMP) == MSG_ID


INVALID_REASONS = {
    "last-char-differs": "no valid signature",
    "decoy": "no valid signature",
    "v2-prefix": "no v1 signature in webhook-signature header",
    "empty-v1": "no v1 signature in webhook-signature header",
}


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (case["value"], reason)
        for case, reason in zip(
            VECTORS["invalid_signatures_for_sign_vector"], INVALID_REASONS.values(), strict=True
        )
    ],
    ids=list(INVALID_REASONS),
)
def test_invalid_vector_signature_is_rejected(signature: str, reason: str) -> None:
    assert reason_of(BODY, with_header("webhook-signature", signature)) == reason


def test_right_signature_under_another_version_is_ignored() -> None:
    signature = SIGN["expected_signature"].replace("v1,", "v2,")
    reason = reason_of(BODY, with_header("webhook-signature", signature))
    assert reason == "no v1 signature in webhook-signature header"


def test_multi_signature_header_verifies_when_one_entry_matches() -> None:
    multi = VECTORS["multi_signature_header_for_sign_vector"]["webhook-signature"]
    assert (
        verify_standard(BODY, with_header("webhook-signature", multi), [SECRET], TIMESTAMP)
        == MSG_ID
    )


def test_v1a_entry_of_the_spec_example_is_ignored_without_crashing() -> None:
    example = VECTORS["spec_example_not_verifiable"]
    headers = {name: example[name] for name in HEADER_NAMES}
    now = int(example["webhook-timestamp"])
    body = example["payload_minified"].encode()
    assert reason_of(body, headers, now=now) == "no valid signature"


def test_altered_payload_is_rejected() -> None:
    assert reason_of(BODY + b" ", HEADERS) == "no valid signature"


def test_webhook_id_is_part_of_what_is_signed() -> None:
    assert reason_of(BODY, with_header("webhook-id", "msg_other")) == "no valid signature"


@pytest.mark.parametrize("offset", [-300, 0, 300], ids=["300s-ahead", "now", "300s-old"])
def test_timestamp_within_tolerance_in_either_direction_verifies(offset: int) -> None:
    assert verify_standard(BODY, HEADERS, [SECRET], now=TIMESTAMP + offset) == MSG_ID


@pytest.mark.parametrize("offset", [-301, 301], ids=["301s-ahead", "301s-old"])
def test_timestamp_beyond_tolerance_in_either_direction_is_rejected(offset: int) -> None:
    assert reason_of(BODY, HEADERS, now=TIMESTAMP + offset) == "timestamp outside the tolerance"


@pytest.mark.parametrize(
    "timestamp",
    [
        "hello",
        f"{TIMESTAMP}.0",
        "1.6e9",
        f" {TIMESTAMP}",
        f"-{TIMESTAMP}",
        "١٦١٤٢٦٥٣٣٠",
        "9" * 5000,
    ],
    ids=["word", "fraction", "exponent", "space", "negative", "arabic-digits", "5000-digits"],
)
def test_non_integer_timestamp_is_rejected(timestamp: str) -> None:
    reason = reason_of(BODY, with_header("webhook-timestamp", timestamp))
    assert reason == "malformed webhook-timestamp header"


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_missing_header_is_rejected(name: str) -> None:
    headers = {key: value for key, value in HEADERS.items() if key != name}
    assert reason_of(BODY, headers) == f"missing {name} header"


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_empty_header_is_rejected_as_missing(name: str) -> None:
    assert reason_of(BODY, with_header(name, "")) == f"missing {name} header"


def test_rotation_accepts_the_signature_of_any_configured_secret() -> None:
    other = "whsec_" + UNPADDED[0]["given"][::-1]
    assert verify_standard(BODY, HEADERS, [other, SECRET], TIMESTAMP) == MSG_ID
    assert reason_of(BODY, HEADERS, [other]) == "no valid signature"


@pytest.mark.parametrize("secret", VECTORS["empty_secret_cases"], ids=repr)
def test_empty_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        verify_standard(BODY, HEADERS, [SECRET, secret], TIMESTAMP)
    with pytest.raises(ValueError, match="secret is empty"):
        sign_standard(BODY, MSG_ID, secret, TIMESTAMP)


@pytest.mark.parametrize(
    "secret", ["whsec_not base64!", "whsec_" + "A" * 33, "whsec_===="], ids=repr
)
def test_secret_that_is_not_base64_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        verify_standard(BODY, HEADERS, [secret], TIMESTAMP)


def test_no_secrets_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no Standard Webhooks secret"):
        verify_standard(BODY, HEADERS, [], TIMESTAMP)


def test_a_single_string_instead_of_a_list_of_secrets_is_refused() -> None:
    with pytest.raises(TypeError):
        verify_standard(BODY, HEADERS, SECRET, TIMESTAMP)


@pytest.mark.parametrize("case", UNPADDED, ids=lambda case: f"padding-{case['padding_needed']}")
@pytest.mark.parametrize("prefix", ["", "whsec_"], ids=["bare", "whsec"])
def test_unpadded_secret_signs_and_verifies(case: dict[str, Any], prefix: str) -> None:
    secret = prefix + case["given"]
    headers = sign_standard(BODY, MSG_ID, secret, TIMESTAMP)
    assert verify_standard(BODY, headers, [secret], TIMESTAMP) == MSG_ID
    padded = prefix + case.get("equivalent", case["given"])
    assert verify_standard(BODY, headers, [padded], TIMESTAMP) == MSG_ID


def test_non_utf8_body_is_rejected() -> None:
    assert reason_of(b"\xff\xfe{}", HEADERS) == "body is not valid UTF-8"


def test_webhook_id_that_cannot_be_utf8_is_rejected() -> None:
    assert reason_of(BODY, with_header("webhook-id", "msg_\ud800")) == (
        "malformed webhook-id header"
    )


UTF8_TEXT = st.text(alphabet=st.characters(codec="utf-8"))


@given(body=UTF8_TEXT, msg_id=UTF8_TEXT.filter(bool))
def test_signatures_agree_with_the_standardwebhooks_library(body: str, msg_id: str) -> None:
    now = int(time.time())  # the library's own verify reads the real clock
    headers = sign_standard(body.encode(), msg_id, SECRET, now)
    Webhook(SECRET).verify(body, headers, json_parse=False)
    library_signature = Webhook(SECRET).sign(msg_id, datetime.fromtimestamp(now, tz=UTC), body)
    library_headers = {**headers, "webhook-signature": library_signature}
    assert verify_standard(body.encode(), library_headers, [SECRET], now) == msg_id


def header_values(name: str) -> st.SearchStrategy[str]:
    known = {
        "webhook-id": st.just(MSG_ID),
        "webhook-timestamp": st.sampled_from([str(TIMESTAMP), str(TIMESTAMP + 301), "1.6e9"]),
        "webhook-signature": st.lists(
            st.one_of(
                st.just(SIGN["expected_signature"]),
                st.builds("{},{}".format, st.sampled_from(["v1", "v2", "v1a", ""]), st.text()),
                st.text(),
            ),
            max_size=4,
        ).map(" ".join),
    }
    return st.one_of(known[name], st.text())


@given(
    body=st.one_of(st.binary(), st.just(BODY)),
    headers=st.fixed_dictionaries(
        {}, optional={name: header_values(name) for name in HEADER_NAMES}
    ),
)
def test_arbitrary_input_raises_nothing_but_a_signature_error(
    body: bytes, headers: dict[str, str]
) -> None:
    try:
        assert verify_standard(body, headers, [SECRET], TIMESTAMP) == headers["webhook-id"]
    except SignatureError as err:
        assert err.reason in REASONS
        assert str(err) == err.reason
