"""Repository rules that no RPC reaches directly."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from skillsvc.core.models import OperationState, OperationType, Stage
from skillsvc.db import NewOperation, OperationChanges, connect
from skillsvc.errors import Aborted


async def test_a_finished_operation_never_changes_again(
    db_url: str, db: asyncpg.Connection
) -> None:
    database = await connect(db_url, pool_size=2)
    try:
        await db.execute("INSERT INTO skill_definitions (skill_id, public) VALUES ('s', true)")
        op, created = await database.repo.insert_operation(
            NewOperation(
                operation_id=str(uuid.uuid4()),
                type=OperationType.INSTALL,
                skill_id="s",
                version="1.0.0",
                state=OperationState.RUNNING,
                stage=Stage.EXTRACTING,
                requested_by="t",
                owner="gone",
            )
        )
        assert created
        reaped = await database.repo.reap_operations(["gone"])
        assert [r.operation_id for r in reaped] == [op.operation_id]
        assert reaped[0].state is OperationState.FAILED
        assert reaped[0].seq == op.seq + 1
        # The process that was (perhaps wrongly) declared dead cannot undo that.
        with pytest.raises(Aborted):
            await database.repo.update_operation(
                op.operation_id,
                OperationChanges(state=OperationState.SUCCEEDED, stage=Stage.DONE),
            )
        row = await db.fetchrow("SELECT state, error_reason FROM skill_install_logs")
        assert (row["state"], row["error_reason"]) == ("FAILED", "INTERRUPTED")
    finally:
        await database.close()
