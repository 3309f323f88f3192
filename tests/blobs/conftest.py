"""Fixtures of the S3 blob store tests: the production server on a real SeaweedFS bucket.

``settings`` is the root fixture's, pointed at a bucket of the test's own, so ``app``,
``stub`` and ``make_app`` serve with ``SKILLSVC_BLOB_STORE=s3://...``.
"""

from __future__ import annotations

import dataclasses

import pytest

from skillsvc.blobs import S3Blobs
from skillsvc.config import Settings
from tests.s3 import SeaweedS3


@pytest.fixture
def settings(settings: Settings, seaweed: SeaweedS3, s3_bucket: str) -> Settings:
    """The default test settings with the blob store in this test's bucket."""
    return dataclasses.replace(settings, blob_store=s3_bucket, blob_store_options=seaweed.options())


@pytest.fixture
def bucket(seaweed: SeaweedS3, s3_bucket: str) -> S3Blobs:
    """A client of the test's bucket, to look at (and tamper with) what is stored."""
    return S3Blobs(s3_bucket, seaweed.options())
