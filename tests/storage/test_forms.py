"""The request bodies of storage's JSON routes: what each form takes, and the first error it reports."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.core.errors import GatehouseError
from gatehouse.storage import forms


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "docs"}, forms.NewBucket("docs", "docs", False, None, None, False)),
        ({"name": "docs", "public": True}, forms.NewBucket("docs", "docs", True, None, None, False)),
        ({"id": "docs", "file_size_limit": "2MB"}, forms.NewBucket("docs", "docs", False, 2_000_000, None, False)),
        ({"id": "docs", "file_size_limit": "1 KiB"}, forms.NewBucket("docs", "docs", False, 1024, None, False)),
        ({"id": "docs", "allowed_mime_types": ["image/*"], "inline_documents": True},
         forms.NewBucket("docs", "docs", False, None, ["image/*"], True)),
    ],
)
def test_new_bucket(body: dict[str, Any], expected: forms.NewBucket) -> None:
    assert forms.NewBucket.parse(body) == expected


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({}, "InvalidBucketName", ""),
        ({"id": "docs", "public": "yes"}, "InvalidRequest", "public must be true or false"),
        ({"id": "docs", "public": "yes", "file_size_limit": "huge"}, "InvalidRequest", "public must"),
        ({"id": "docs", "file_size_limit": "huge"}, "InvalidRequest", "file_size_limit 'huge' is not a size"),
        ({"id": "docs", "file_size_limit": 0}, "InvalidRequest", "is not a size"),
        ({"id": "docs", "allowed_mime_types": "image/png"}, "InvalidRequest", "allowed_mime_types must be a list"),
        ({"id": "docs", "inline_documents": 1}, "InvalidRequest", "inline_documents must be true or false"),
    ],
)
def test_new_bucket_refusals(body: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(GatehouseError) as refused:
        forms.NewBucket.parse(body)
    assert refused.value.code == code and message in refused.value.message


def test_bucket_changes_set_only_what_the_body_names() -> None:
    assert forms.BucketChanges.parse({}) == forms.BucketChanges(None, None, None, None, False, False)
    lifted = forms.BucketChanges.parse({"file_size_limit": None, "public": True})
    assert lifted == forms.BucketChanges(True, None, None, None, True, False)
    with pytest.raises(GatehouseError, match="inline_documents must be true or false"):
        forms.BucketChanges.parse({"inline_documents": "no"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, forms.ListOptions("", 100, 0, "", "name", False)),
        ({"prefix": "/a/b/", "limit": 5, "offset": 10}, forms.ListOptions("a/b/", 5, 10, "", "name", False)),
        ({"search": "x", "sortBy": {"column": "created_at", "order": "DESC"}},
         forms.ListOptions("", 100, 0, "x", "created_at", True)),
    ],
)
def test_list_options(body: dict[str, Any], expected: forms.ListOptions) -> None:
    assert forms.ListOptions.parse(body) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prefix": None}, "prefix must be a string"),
        ({"limit": 0}, "limit must be an integer from 1 to 1000"),
        ({"limit": True}, "limit must be an integer"),
        ({"offset": -1}, "offset must be an integer from 0"),
        ({"sortBy": {"column": "size"}}, "sortBy.column must be"),
    ],
)
def test_list_option_refusals(body: dict[str, Any], message: str) -> None:
    with pytest.raises(GatehouseError, match=message):
        forms.ListOptions.parse(body)


def test_transfer_defaults_to_the_source_bucket() -> None:
    same = forms.Transfer.parse({"bucketId": "a", "sourceKey": "x", "destinationKey": "y"})
    assert same == forms.Transfer("a", "x", "a", "y")
    other = forms.Transfer.parse({"bucketId": "a", "sourceKey": "x", "destinationKey": "y", "destinationBucket": "b"})
    assert other.target_bucket == "b"
    with pytest.raises(GatehouseError, match="required strings"):
        forms.Transfer.parse({"bucketId": "a", "sourceKey": "", "destinationKey": "y"})


def test_name_lists_and_expiry() -> None:
    assert forms.name_list({"paths": ["a", "b"]}, "paths") == ["a", "b"]
    with pytest.raises(GatehouseError, match="prefixes must be a list of at most 1000 object names"):
        forms.name_list({"prefixes": ["a"] * 1001}, "prefixes")
    assert forms.expires_in({"expiresIn": "60"}, 3600) == 60
    with pytest.raises(GatehouseError, match="between 1 and 3600 seconds, got 3601"):
        forms.expires_in({"expiresIn": 3601}, 3600)


def test_signed_transform_keeps_only_transform_fields() -> None:
    assert forms.signed_transform(None) is None
    assert forms.signed_transform({"width": 100, "other": "x"}) == {"width": "100"}
    with pytest.raises(GatehouseError, match="quality must be"):
        forms.signed_transform({"quality": 5})
