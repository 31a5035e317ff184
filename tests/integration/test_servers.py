"""The session's real servers answer: the base every other integration test stands on."""

import asyncpg
import redis.asyncio as aioredis


async def test_postgres_answers(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 170000
    finally:
        await conn.close()


async def test_redis_answers(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
