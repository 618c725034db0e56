"""Reads dbo.AllTypes through ods-sim with python-tds and prints the rows as JSON.

Usage: read_all_types.py HOST PORT DATABASE PASSWORD

Values are printed in a form the Rust test reproduces from tiberius' values: decimals as fixed-
point strings, dates and times as ISO strings with microseconds, GUIDs lower-case, binary as hex.
"""
import datetime
import decimal
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
            out["batch"] = rows(cur)
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
