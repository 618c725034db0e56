"""The way the seed's nightly pipelines move the ODS into staging, for `scripts/bench seed`: per
table, SELECT every row over TDS (python-tds), DELETE every row of the staging table, and INSERT
the rows in batches of 1,000 with psycopg2's `execute_batch`, one transaction per table. Rows
are fetched 10,000 at a time (the seed's jobs hold a table whole; streaming only saves memory).

Usage: seed_reload.py TDS_HOST TDS_PORT DATABASE PASSWORD STAGING_DSN TABLES_JSON
  TABLES_JSON: [[source_schema, source_table, target_schema, target_table], ...]; the target
  tables exist, with the source's columns lower-cased (staging as edfi-cdc creates it).

Prints one JSON line: {"tables": n, "rows": n, "seconds": s, "per_table": {table: seconds}};
its progress, table by table, on standard error.
"""
import json
import sys
import time

import psycopg2
import psycopg2.extras
import pytds

FETCH = 10_000
PAGE = 1_000


def main():
    host, port, database, password, dsn, tables = sys.argv[1:7]
    psycopg2.extras.register_uuid()
    started = time.time()
    source = pytds.connect(server=host, port=int(port), database=database, user="sa",
                           password=password, autocommit=True, login_timeout=10, timeout=3600)
    staging = psycopg2.connect(dsn)
    total, per_table = 0, {}
    for source_schema, source_table, target_schema, target_table in json.loads(tables):
        t0 = time.time()
        with source.cursor() as c:
            c.execute("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
                      "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                      (source_schema, source_table))
            columns = [r[0] for r in c.fetchall()]
        if not columns:
            sys.exit(f"no columns for {source_schema}.{source_table} at the source")
        names = ", ".join(f"[{c}]" for c in columns)
        insert = (f'INSERT INTO "{target_schema}"."{target_table}" '
                  f'({", ".join(chr(34) + c.lower() + chr(34) for c in columns)}) '
                  f'VALUES ({", ".join(["%s"] * len(columns))})')
        with source.cursor() as read, staging.cursor() as write:
            read.execute(f"SELECT {names} FROM [{source_schema}].[{source_table}]")
            write.execute(f'DELETE FROM "{target_schema}"."{target_table}"')
            while True:
                rows = read.fetchmany(FETCH)
                if not rows:
                    break
                psycopg2.extras.execute_batch(write, insert, [tuple(r) for r in rows], page_size=PAGE)
                total += len(rows)
        staging.commit()
        per_table[f"{source_schema}.{source_table}"] = round(time.time() - t0, 2)
        print(f"seed reload: {source_schema}.{source_table} in {time.time() - t0:.1f} s; "
              f"{total} rows in {time.time() - started:.0f} s so far", file=sys.stderr, flush=True)
    print(json.dumps({"tables": len(per_table), "rows": total,
                      "seconds": round(time.time() - started, 2), "per_table": per_table}))


if __name__ == "__main__":
    main()
