"""A workload written over TDS by an independent client (python-tds), as an application would
write to the ODS: explicit transactions that insert new students (numbered by the identity
column, read back with @@IDENTITY), rename students and delete students it inserted
earlier, from several connections at once.

Usage: tds_workload.py HOST PORT DATABASE PASSWORD SEED TRANSACTIONS WRITERS

Prints one JSON line: {"transactions": n, "inserted": n, "updated": n, "deleted": n}.
"""
import datetime
import json
import random
import sys
import threading
import time
import uuid

import pytds


def connect(host, port, database, password):
    return pytds.connect(
        server=host,
        port=int(port),
        database=database,
        user="sa",
        password=password,
        autocommit=False,
        login_timeout=10,
        timeout=60,
    )


def writer(args, index, transactions, first_number, existing, totals, lock, errors):
    host, port, database, password, seed = args
    rng = random.Random(seed * 1000 + index)
    mine = []
    next_number = first_number
    counts = {"inserted": 0, "updated": 0, "deleted": 0}
    try:
        with connect(host, port, database, password) as conn, conn.cursor() as cur:
            cur.execute("SELECT DescriptorId FROM edfi.Descriptor WHERE Namespace LIKE '%SexDescriptor'")
            sexes = [r[0] for r in cur.fetchall()]
            conn.commit()
            for _ in range(transactions):
                for _ in range(rng.randint(1, 6)):
                    kind = rng.random()
                    if kind < 0.5 or not mine:
                        # As the Ed-Fi API inserts: StudentUSI from the identity column, the
                        # timestamps from their defaults, the resource Id given.
                        number = next_number
                        next_number += 1
                        cur.execute(
                            "INSERT INTO edfi.Student (FirstName, LastSurname, BirthDate, "
                            "BirthSexDescriptorId, StudentUniqueId, Id) VALUES (%s, %s, %s, %s, %s, %s)",
                            (f"Tds{number}", "Client", datetime.date(2012, 5, 1), rng.choice(sexes),
                             f"TDS{number}", uuid.UUID(int=rng.getrandbits(128))),
                        )
                        # The insert ran in its own sp_executesql scope: @@IDENTITY has it.
                        cur.execute("SELECT @@IDENTITY")
                        usi = int(cur.fetchone()[0])
                        mine.append(usi)
                        counts["inserted"] += 1
                    elif kind < 0.9:
                        usi = rng.choice(mine + existing)
                        cur.execute(
                            "UPDATE edfi.Student SET FirstName = %s, LastModifiedDate = SYSDATETIME() "
                            "WHERE StudentUSI = %s",
                            (f"Renamed{rng.randint(0, 1_000_000)}", usi),
                        )
                        counts["updated"] += 1
                    else:
                        usi = mine.pop(rng.randrange(len(mine)))
                        cur.execute("DELETE FROM edfi.Student WHERE StudentUSI = %s", (usi,))
                        counts["deleted"] += 1
                conn.commit()
                time.sleep(rng.random() * 0.01)
    except Exception as e:  # reported to the test, which fails
        errors.append(f"writer {index}: {e!r}")
    with lock:
        for k, v in counts.items():
            totals[k] += v
        totals["transactions"] += transactions


def main():
    host, port, database, password, seed, transactions, writers = sys.argv[1:8]
    seed, transactions, writers = int(seed), int(transactions), int(writers)
    with connect(host, port, database, password) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(StudentUSI) FROM edfi.Student")
        top = cur.fetchone()[0] or 0
        cur.execute("SELECT StudentUSI FROM edfi.Student")
        existing = [r[0] for r in cur.fetchall()]
        conn.commit()
    totals = {"transactions": 0, "inserted": 0, "updated": 0, "deleted": 0}
    lock = threading.Lock()
    errors = []
    threads = [
        threading.Thread(
            target=writer,
            args=((host, port, database, password, seed), i, transactions // writers,
                  top + 1 + i * 1_000_000, existing, totals, lock, errors),
        )
        for i in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
