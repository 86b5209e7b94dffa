"""SigV4 as AWS documents it: the worked example of a chunked upload, signed end to end.

The values are AWS's own ("Signature Calculations for the Authorization Header: Transferring
Payload in Multiple Chunks"): the seed signature checks the canonical request, the chunk
signatures the chain.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.s3 import sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
    "x-amz-decoded-content-length;x-amz-storage-class,"
    "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
)
HEADERS = {
    "host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "authorization": AUTHORIZATION, "x-amz-content-sha256": sigv4.STREAMING_SIGNED, "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560", "content-length": "66824",
}
MOMENT = datetime(2013, 5, 24, tzinfo=UTC)


def test_the_seed_and_chunk_signatures_of_awss_example() -> None:
    claimed = sigv4.parse(HEADERS, [])
    canonical = sigv4.canonical_request(claimed, "PUT", b"/examplebucket/chunkObject.txt", b"",
                                        {name: [value] for name, value in HEADERS.items()})
    key = sigv4.signing_key(SECRET, claimed)
    assert sigv4.expected_signature(key, claimed, canonical) == claimed.signature
    previous = claimed.signature
    expected = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
    for chunk, signature in zip((b"a" * 65536, b"a" * 1024, b""), expected, strict=True):
        previous = sigv4.chunk_signature(key, claimed, previous, hashlib.sha256(chunk).hexdigest())
        assert previous == signature


@pytest.mark.parametrize(("shift", "refused"), [
    (timedelta(minutes=14), None), (timedelta(minutes=-14), None),
    (timedelta(minutes=16), "RequestTimeTooSkewed"), (timedelta(minutes=-16), "RequestTimeTooSkewed"),
])
def test_the_fifteen_minute_window(shift: timedelta, refused: str | None) -> None:
    claimed = sigv4.parse(HEADERS, [])
    if refused is None:
        sigv4.check_time(claimed, region="us-east-1", now=MOMENT + shift)
        return
    with pytest.raises(GatehouseError) as error:
        sigv4.check_time(claimed, region="us-east-1", now=MOMENT + shift)
    assert error.value.code == refused


def test_the_region_the_service_and_the_scope_date_are_checked() -> None:
    claimed = sigv4.parse(HEADERS, [])
    with pytest.raises(GatehouseError) as region:
        sigv4.check_time(claimed, region="local", now=MOMENT)
    assert region.value.code == "AuthorizationHeaderMalformed"
    other = sigv4.parse({**HEADERS, "authorization": AUTHORIZATION.replace("/s3/", "/sts/")}, [])
    with pytest.raises(GatehouseError) as service:
        sigv4.check_time(other, region="us-east-1", now=MOMENT)
    assert service.value.code == "AuthorizationHeaderMalformed"
    shifted = sigv4.parse({**HEADERS, "x-amz-date": "20130525T000000Z"}, [])
    with pytest.raises(GatehouseError) as date:
        sigv4.check_time(shifted, region="us-east-1", now=MOMENT + timedelta(days=1))
    assert date.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("header", [
    {"x-amz-content-sha256": "abc"}, {"x-amz-date": "yesterday"}, {"x-amz-date": "20131340T000000Z"},
    {"authorization": "AWS4-HMAC-SHA256 Credential=a/b"}, {"authorization": "AWS AKIA:signature"},
    {"authorization": AUTHORIZATION.replace("content-encoding;content-length", "content-length;content-encoding")},
])
def test_malformed_signatures_are_refused_before_any_check(header: dict[str, str]) -> None:
    with pytest.raises(GatehouseError) as error:
        sigv4.parse({**HEADERS, **header}, [])
    assert error.value.status in (400, 403)


def test_the_canonical_query_is_decoded_reencoded_and_sorted() -> None:
    assert sigv4.canonical_query(b"prefix=a%20b&list-type=2&uploads&X-Amz-Signature=x&delimiter=%2F") == (
        "delimiter=%2F&list-type=2&prefix=a%20b&uploads="
    )
