"""Reads dbo.AllTypes through ods-sim with python-tds and prints the rows as JSON.

Usage: read_all_types.py HOST PORT DATABASE PASSWORD

Values are printed in a form the Rust test reproduces from tiberius' values: decimals as fixed-
point strings, dates and times as ISO strings with microseconds, GUIDs lower-case, binary as hex.
"""
import datetime
import decimal
import hashlib
import json
import sys
import uuid

import pytds


def plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, datetime.datetime):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    raise TypeError(f"unexpected {type(v)}: {v!r}")


# The row hash `edfi-cdc verify` sends: MD5 of the UTF-8 text of each column, "-" for NULL and
# "+" before a value.
ROW_HASH = """SELECT Id, CONVERT(char(32), HASHBYTES('MD5', CONVERT(varchar(max), CONCAT(
    CASE WHEN Id IS NULL THEN N'-' ELSE CONCAT(N'+', CONVERT(varchar(20), Id)) END, N'|',
    CASE WHEN D IS NULL THEN N'-' ELSE CONCAT(N'+', CONVERT(varchar(10), D, 23)) END, N'|',
    CASE WHEN DT2 IS NULL THEN N'-'
        ELSE CONCAT(N'+', CONVERT(varchar(26), CAST(DT2 AS datetime2(6)), 121)) END, N'|',
    CASE WHEN G IS NULL THEN N'-' ELSE CONCAT(N'+', LOWER(CONVERT(char(36), G))) END, N'|',
    CASE WHEN B IS NULL THEN N'-' ELSE CONCAT(N'+', CONVERT(varchar(1), CAST(B AS int))) END, N'|',
    CASE WHEN VB IS NULL THEN N'-' ELSE CONCAT(N'+', CONVERT(varchar(max), VB, 2)) END, N'|',
    CASE WHEN NV IS NULL THEN N'-' ELSE CONCAT(N'+', NV) END
    ) COLLATE Latin1_General_100_BIN2_UTF8)), 2) FROM dbo.AllTypes ORDER BY Id"""


def row_hash(row):
    """The hash ROW_HASH computes, from the values python-tds read."""

    def part(v, text):
        return "-" if v is None else "+" + text(v)

    text = "|".join([
        part(row["Id"], str),
        part(row["D"], lambda d: d.isoformat()),
        part(row["DT2"], lambda t: t.isoformat(sep=" ", timespec="microseconds")),
        part(row["G"], lambda g: str(g).lower()),
        part(row["B"], lambda b: "1" if b else "0"),
        part(row["VB"], lambda b: bytes(b).hex().upper()),
        part(row["NV"], str),
    ])
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def rows(cursor):
    names = [d[0] for d in cursor.description]
    return [{n: plain(v) for n, v in zip(names, row)} for row in cursor.fetchall()]


def main():
    host, port, database, password = sys.argv[1:5]
    out = {}
    # autocommit off: python-tds begins and commits transactions with transaction manager
    # requests.
    with pytds.connect(
        server=host,
        port=int(port),
        database=database,
        user="sa",
        password=password,
        autocommit=False,
        login_timeout=10,
        timeout=30,
    ) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM dbo.AllTypes ORDER BY Id")
            names = [d[0] for d in cur.description]
            raw = [dict(zip(names, row)) for row in cur.fetchall()]
            out["batch"] = [{n: plain(v) for n, v in row.items()} for row in raw]
            cur.execute(ROW_HASH)
            out["row_hash"] = [list(row) for row in cur.fetchall()]
            out["row_hash_expected"] = [[row["Id"], row_hash(row)] for row in raw]
            cur.execute(
                "SELECT * FROM dbo.AllTypes WHERE Id = %s AND NV = %s AND Dec = %s AND D = %s "
                "AND DT2 = %s AND G = %s AND VB = %s AND B = %s",
                (
                    1,
                    "Zoë 日本 ñ",
                    decimal.Decimal("12345678901234.5678"),
                    datetime.date(2024, 2, 29),
                    datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
                    uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"),
                    pytds.Binary(b"\x00\xff\x10"),
                    True,
                ),
            )
            out["rpc"] = rows(cur)
            cur.execute("SELECT %s AS n, %s AS s", (None, "ñ"))
            out["params"] = rows(cur)
            try:
                cur.execute("SELECT * FROM dbo.NoSuchTable")
                out["error"] = None
            except pytds.ProgrammingError as e:
                out["error"] = e.number
        conn.commit()
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
