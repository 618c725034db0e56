"""Runs T-SQL statements through an independent TDS client (python-tds) and prints what each
returned, for a test to compare with what the replicator's own client read.

Usage: run_tsql.py HOST PORT DATABASE PASSWORD < statements.json

stdin: a JSON list of {"name", "sql", "params"}; `@P1`, `@P2`, … in `sql` are the parameters, in
order: JSON values, or {"date": "yyyy-mm-dd"} for a date. stdout: one JSON object, name → {"columns": [...], "rows": [[...]]} or {"error": "..."}.
Values print as the test prints the replicator's: decimals as fixed-point strings without
trailing fractional zeros, dates as
ISO dates, times as ISO date-times cut to the millisecond (`datetime` counts 1/300 s and the two
clients round it apart), GUIDs lower-case, binary as hex.
"""
import datetime
import decimal
import json
import re
import sys
import uuid

import pytds


def plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return fixed(format(v, "f"))
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=None).isoformat(timespec="microseconds")[:23]
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    raise TypeError(f"unexpected value {v!r}")


def fixed(text):
    """A decimal's plain text without trailing fractional zeros: the two clients keep a
    value's scale differently (python-tds builds 12.50 as 1250 / 100 = 12.5)."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def typed(p):
    if isinstance(p, dict):
        return datetime.date.fromisoformat(p["date"])
    return p


def pyformat(sql):
    """`@P1` → `%(P1)s`, and `%` doubled: python-tds' named parameters."""
    return re.sub(r"@P(\d+)", r"%(P\1)s", sql.replace("%", "%%"))


def main():
    host, port, database, password = sys.argv[1:5]
    statements = json.load(sys.stdin)
    conn = pytds.connect(
        server=host,
        port=int(port),
        database=database,
        user="sa",
        password=password,
        autocommit=True,
        login_timeout=10,
        timeout=60,
    )
    out = {}
    with conn.cursor() as cur:
        for s in statements:
            params = {f"P{i + 1}": typed(p) for i, p in enumerate(s["params"])}
            try:
                if params:
                    cur.execute(pyformat(s["sql"]), params)
                else:
                    cur.execute(s["sql"])
                if cur.description is None:
                    out[s["name"]] = {"columns": [], "rows": []}
                    continue
                columns = [d[0] for d in cur.description]
                rows = [[plain(v) for v in row] for row in cur.fetchall()]
                out[s["name"]] = {"columns": columns, "rows": rows}
            except Exception as e:  # reported per statement; the test names it
                out[s["name"]] = {"error": f"{type(e).__name__}: {e}"}
    conn.close()
    json.dump(out, sys.stdout)


main()
