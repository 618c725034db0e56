"""Independent reader of the Redshift sink's batch files, for the tests.

Usage: replay_batches.py DIR TABLES_JSON, where DIR holds the objects of one connector as
<batch>/<table>/{manifest,part-NNNNN.csv.gz} and TABLES_JSON maps each table directory to
{"columns": n, "key": [column indexes]}. Checks every manifest against the parts beside it,
parses every part with Python's csv module, replays the batches in order (snapshot loads
first, then change batches by version; a change batch's rows end with the operation, where
`d` deletes the key, and the change's version) and prints
{"problems": [...], "tables": {table: [[field or null, ...], ...]}}. `\\N` unquoted is NULL.
"""
import csv
import gzip
import json
import os
import sys

root, tables = sys.argv[1], json.loads(sys.argv[2])
problems = []
state = {t: {} for t in tables}
batches = sorted(os.listdir(root), key=lambda b: (0 if b.startswith("s") else 1, b))
for batch in batches:
    for table in sorted(os.listdir(os.path.join(root, batch))):
        d = os.path.join(root, batch, table)
        files = sorted(os.listdir(d))
        parts = [f for f in files if f.startswith("part-")]
        if "manifest" not in files:
            problems.append(f"{batch}/{table}: no manifest")
            continue
        with open(os.path.join(d, "manifest"), encoding="utf-8") as f:
            entries = json.load(f)["entries"]
        listed = []
        for e in entries:
            url = e["url"]
            if not url.startswith("s3://") or f"/{batch}/{table}/" not in url:
                problems.append(f"{batch}/{table}: manifest entry {url} is outside the batch")
            name = url.rsplit("/", 1)[1]
            listed.append(name)
            if not e.get("mandatory"):
                problems.append(f"{batch}/{table}: {name} is not mandatory")
            if name in parts and e["meta"]["content_length"] != os.path.getsize(os.path.join(d, name)):
                problems.append(f"{batch}/{table}: {name} content_length differs from the object")
        if sorted(listed) != parts:
            problems.append(f"{batch}/{table}: manifest lists {sorted(listed)}, parts are {parts}")
        spec = tables[table]
        rows = state[table]
        for p in parts:
            with gzip.open(os.path.join(d, p), "rt", encoding="utf-8", newline="") as f:
                for rec in csv.reader(f):
                    vals = [None if v == "\\N" else v for v in rec]
                    op = "u"
                    if len(vals) == spec["columns"] + 2:
                        vals.pop()  # the change's version
                        op = vals.pop()
                    elif len(vals) != spec["columns"]:
                        problems.append(f"{batch}/{table}/{p}: a record has {len(vals)} fields")
                        continue
                    key = tuple(vals[i] for i in spec["key"])
                    if op == "d":
                        rows.pop(key, None)
                    else:
                        rows[key] = vals
print(json.dumps({"problems": problems, "tables": {t: list(r.values()) for t, r in state.items()}}))
