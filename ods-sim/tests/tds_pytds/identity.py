"""Writes Ed-Fi Student rows through ods-sim with python-tds as the Ed-Fi API does (identity and
default columns left out) and prints, as JSON, what each step returned: identity values, error
numbers, and the defaulted columns' presence.

Usage: identity.py HOST PORT DATABASE PASSWORD
"""
import datetime
import json
import sys

import pytds

host, port, database, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}


def error_number(cur, sql, params=None):
    try:
        cur.execute(sql, params)
    except pytds.Error as e:
        return e.msg_no
    return None


INSERT = ("INSERT INTO edfi.Student (StudentUniqueId, FirstName, LastSurname, BirthDate) "
          "VALUES (%s, %s, %s, %s)")

def connect():
    return pytds.connect(server=host, port=port, database=database, user="sa", password=password,
                         autocommit=True, login_timeout=10, timeout=30)


with connect() as conn:
    with conn.cursor() as cur:
        # A parameterised insert runs in an sp_executesql call, a scope of its own: a later batch
        # sees its number in @@IDENTITY, not in SCOPE_IDENTITY().
        cur.execute(INSERT, ("S-1", "Ada", "Lovelace", datetime.date(2012, 12, 10)))
        cur.execute("SELECT SCOPE_IDENTITY(), @@IDENTITY")
        out["first"] = [None if v is None else int(v) for v in cur.fetchone()]
        # In one batch, SCOPE_IDENTITY() gives the insert's number.
        cur.execute("INSERT INTO edfi.Student (StudentUniqueId, FirstName, LastSurname, BirthDate) "
                    "VALUES (N'S-2', N'Alan', N'Turing', '2012-06-23'); SELECT SCOPE_IDENTITY()")
        while cur.description is None and cur.nextset():
            pass
        out["second"] = int(cur.fetchone()[0])
        out["explicit_while_off"] = error_number(
            cur, "INSERT INTO edfi.Student (StudentUSI, StudentUniqueId, FirstName, LastSurname, "
            "BirthDate) VALUES (50, 'S-50', 'Grace', 'Hopper', '2012-12-09')")
        cur.execute("SET IDENTITY_INSERT edfi.Student ON")
        cur.execute("INSERT INTO edfi.Student (StudentUSI, StudentUniqueId, FirstName, LastSurname, "
                    "BirthDate) VALUES (100, 'S-100', 'Grace', 'Hopper', '2012-12-09')")
        out["omitted_while_on"] = error_number(cur, INSERT, ("S-3", "Edsger", "Dijkstra", datetime.date(2012, 5, 11)))
        out["second_table_on"] = error_number(cur, "SET IDENTITY_INSERT dbo.Numbered ON")
        cur.execute("SET IDENTITY_INSERT edfi.Student OFF")
        cur.execute(INSERT, ("S-4", "Barbara", "Liskov", datetime.date(2012, 11, 7)))
        cur.execute("SELECT @@IDENTITY")
        out["after_explicit"] = int(cur.fetchone()[0])
        out["no_identity"] = error_number(cur, "SET IDENTITY_INSERT dbo.Plain ON")
        cur.execute(
            "SELECT StudentUSI, StudentUniqueId, CASE WHEN Id IS NULL THEN 0 ELSE 1 END, "
            "CASE WHEN CreateDate IS NULL OR LastModifiedDate IS NULL THEN 0 ELSE 1 END "
            "FROM edfi.Student ORDER BY StudentUSI")
        out["rows"] = [list(r) for r in cur.fetchall()]
        cur.execute("SELECT COUNT(DISTINCT Id) FROM edfi.Student")
        out["distinct_ids"] = cur.fetchone()[0]

def connect():
    return pytds.connect(server=host, port=port, database=database, user="sa", password=password,
                         autocommit=True, login_timeout=10, timeout=30)


with connect() as conn:
    with conn.cursor() as cur:
        # A new session: no identity value yet.
        cur.execute("SELECT SCOPE_IDENTITY(), @@IDENTITY")
        out["new_session"] = list(cur.fetchone())

json.dump(out, sys.stdout)
