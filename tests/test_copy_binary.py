"""The binary COPY encoder against a real PostgreSQL: every type it writes reads back."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from projections import copy_binary as cb

_COLUMNS = "t, s, i, h, f, b, fa, ta"
_ENCODERS: list[cb.Encoder] = [cb.timestamptz, cb.text, cb.int4, cb.int2, cb.float4,
                               cb.boolean, cb.float4_array, cb.text_array]


def _f4(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


async def test_every_type_round_trips(pg_pool: AsyncConnectionPool[Any]) -> None:
    rows = [
        # nanoseconds truncated to microseconds; unicode; negative numbers
        (1_704_067_200_123_456_789, "pépiement ☂", -7, 50, -0.1, True, (0.25, -1.5, 3e-8),
         ("birds", "été", "")),
        # before PostgreSQL's epoch (2000), NULLs, empty arrays
        (0, "", 2**31 - 1, None, None, False, (), ()),
    ]
    async with pg_pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute("CREATE TEMP TABLE copied (t timestamptz, s text, i int4, h int2,"
                          " f float4, b bool, fa float4[], ta text[])")
        await cb.copy_rows(cur, "copied", _COLUMNS, _ENCODERS, rows)
        await cur.execute(f"SELECT {_COLUMNS} FROM copied ORDER BY t DESC")
        back = await cur.fetchall()
    first = back[0]
    # float4 values compared as float4 (psycopg reads them back as their shortest decimal)
    assert _f4(first[4]) == _f4(-0.1)
    assert [_f4(x) for x in first[6]] == [0.25, -1.5, _f4(3e-8)]
    assert first[:4] + first[5:6] + first[7:] == (
        datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), "pépiement ☂", -7, 50, True,
        ["birds", "été", ""])
    assert back[1] == (datetime(1970, 1, 1, tzinfo=UTC), "", 2**31 - 1, None, None, False,
                       [], [])


async def test_no_rows_is_a_valid_copy(pg_pool: AsyncConnectionPool[Any]) -> None:
    async with pg_pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute("CREATE TEMP TABLE nothing (t timestamptz)")
        await cb.copy_rows(cur, "nothing", "t", [cb.timestamptz], [])
        await cur.execute("SELECT count(*) FROM nothing")
        assert await cur.fetchone() == (0,)
