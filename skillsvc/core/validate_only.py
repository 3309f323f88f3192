"""Validate: an archive checked exactly as an install would, with nothing left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator

from skillsvc.core.archive_work import ArchiveWork
from skillsvc.core.install_base import store_errors
from skillsvc.core.install_requests import InstallerSettings, InstallRequest
from skillsvc.core.models import (
    SourceType,
)
from skillsvc.intake import Spooler, fetch_url
from skillsvc.store import Store
from skillsvc.validation import Code, Report, Severity, Violation

# One logger for every part of the installer, as when it was one module.
logger = logging.getLogger("skillsvc.core.installs")


async def validate_only(
    req: InstallRequest,
    chunks: AsyncIterator[bytes] | None,
    *,
    store: Store,
    instance_id: str,
    slots: asyncio.Semaphore,
    settings: InstallerSettings,
    archives: ArchiveWork,
) -> Report:
    """Receive (or download) the archive into staging, validate it, remove staging.

    The extraction takes one of the installer's ``slots``, as an install's does.
    """
    work = await asyncio.to_thread(store.new_work_dir, instance_id, f"validate-{uuid.uuid4().hex}")
    try:
        archive = work / "archive"
        if req.source_type is SourceType.UPLOAD:
            assert chunks is not None
            spooler = Spooler(
                archive,
                max_bytes=settings.limits.max_package_bytes,
                declared_size=req.declared_size,
            )
            async with spooler:
                async for chunk in chunks:
                    await spooler.write(chunk)
                spooled = await spooler.finish()
        else:
            spooled = await fetch_url(
                req.url,
                archive,
                max_bytes=settings.limits.max_package_bytes,
                policy=settings.url_policy,
            )
        async with slots:
            with store_errors("extract the package"):
                report = await archives.validate(
                    spooled.path,
                    work / "tree",
                    settings.limits,
                    sha256=spooled.sha256,
                    expected_name=req.skill_id or None,
                    expected_version=req.version or None,
                )
        if req.sha256 and req.sha256 != spooled.sha256:
            mismatch = Violation(
                Code.CHECKSUM_MISMATCH,
                "",
                f"the archive's SHA-256 is {spooled.sha256}, not the expected {req.sha256}",
                Severity.ERROR,
            )
            report = dataclasses.replace(report, violations=(mismatch, *report.violations))
        return report
    finally:
        await asyncio.shield(asyncio.to_thread(store.make_writable_and_remove, work))
