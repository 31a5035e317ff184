"""The vault database, as the backup engine reads and writes it: a blocking facade over
one asyncpg connection (:class:`VaultDb`), for the synchronous backup and restore code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from payapi.backup.vault_format import (
    BATCH_BYTES,
    BATCH_ROWS,
    VaultBackupError,
    describe_dsn,
)

T = TypeVar("T")


class VaultDb:
    """A blocking facade over one asyncpg connection, run on a private event loop thread.

    The public API is synchronous (the CLI is), while the repository's writer pulls data
    from plain iterators; this lets a generator fetch cursor batches on demand, so memory
    stays bounded, whether or not the caller itself runs an event loop.
    """

    def __init__(self, dsn: str, what: str, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="payapi-vault-backup-db", daemon=True
        )
        self._thread.start()
        self.what = what
        try:
            self.conn: asyncpg.Connection[asyncpg.Record] = self.run(
                asyncpg.connect(dsn, timeout=timeout)
            )
        except BaseException as exc:
            self._stop()
            if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresError)):
                raise VaultBackupError(
                    f"cannot connect to {what} at {describe_dsn(dsn)} ({type(exc).__name__})"
                ) from None
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def execute(self, sql: str, *args: Any) -> str:
        return self.run(self.conn.execute(sql, *args))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(sql, *args))

    def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return self.run(self.conn.fetchrow(sql, *args))

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.run(self.conn.fetchval(sql, *args))

    def batches(self, sql: str, *args: Any) -> Iterator[list[Any]]:
        """Rows of ``sql`` through a server-side cursor (needs a transaction), in batches
        of at most ``BATCH_ROWS`` rows and about ``BATCH_BYTES`` (sized by the rows'
        first column, the large one in every query here)."""

        async def open_cursor() -> Any:
            return await self.conn.cursor(sql, *args)

        cur = self.run(open_cursor())
        size = 16  # the first batch learns the row size
        while True:
            rows: list[Any] = self.run(cur.fetch(size))
            if not rows:
                return
            yield rows
            nbytes = sum(len(r[0]) if isinstance(r[0], (str, bytes)) else 64 for r in rows)
            per_row = max(1, nbytes // len(rows))
            size = max(1, min(BATCH_ROWS, BATCH_BYTES // per_row))

    def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        self.run(self.conn.copy_records_to_table(table, records=records, columns=list(columns)))

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        try:
            self.run(self.conn.close(timeout=5))
        except Exception:  # closing is best effort
            self.conn.terminate()
        finally:
            self._stop()

    def __enter__(self) -> VaultDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def columns_of(db: VaultDb, table: str) -> list[str]:
    rows = db.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1
           ORDER BY ordinal_position""",
        table,
    )
    return [r["column_name"] for r in rows]
