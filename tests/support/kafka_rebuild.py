"""An independent consumer (kafka-python, not librdkafka) that rebuilds one table from its topic.

Usage: kafka_rebuild.py --bootstrap HOST:PORT --topic T [--timeout-s S]

Reads every partition of the topic from the beginning up to the end offsets it finds at its
start, as any downstream consumer would: records with the header `edfi-cdc-control` are skipped
by that header alone (their value is never parsed); a tombstone (null value) is skipped; `c`,
`u` and `r` put `after` under the record's key, `d` removes the key. Any other `op` on a record
without the header is an error (exit 1). Records in Kafka Connect JSON with schemas (`format =
"debezium"`) are read as Connect would: the payload, each value by its field's schema (Debezium's
date, time and timestamp types, Connect decimals, bytes), every payload field checked against
the schema (exit 1 when one is missing or of another type). Prints one JSON line per row left,
{"key": …, "after": …} with dates and times as ISO text, and last
{"stats": {"control": N, "tombstones": N, "connect_json": N, "c": N, …}}.
Exits 1 when the end offsets are not reached within the timeout.
"""
import argparse
import base64
import datetime
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition

CONTROL_HEADER = "edfi-cdc-control"
EPOCH = datetime.date(1970, 1, 1)
PYTHON_TYPES = {"boolean": bool, "int8": int, "int16": int, "int32": int, "int64": int,
                "float": (int, float), "double": (int, float), "string": str, "bytes": str,
                "struct": dict, "array": list}
# Debezium's temporal types: (unit per second, is a time of day).
TEMPORAL = {"io.debezium.time.Timestamp": (10**3, False),
            "io.debezium.time.MicroTimestamp": (10**6, False),
            "io.debezium.time.NanoTimestamp": (10**9, False),
            "io.debezium.time.Time": (10**3, True),
            "io.debezium.time.MicroTime": (10**6, True),
            "io.debezium.time.NanoTime": (10**9, True)}


class SchemaError(Exception):
    pass


def iso_from_units(n, per_second, time_only):
    seconds, frac = divmod(n, per_second)
    digits = len(str(per_second)) - 1
    if time_only:
        text = (datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")
    else:
        text = (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:0{digits}d}"


def connect_value(schema, value):
    """A Connect JSON value as a plain one, by its schema; SchemaError when they disagree."""
    if value is None:
        if not schema.get("optional"):
            raise SchemaError(f"null in required field {schema.get('field')}")
        return None
    kind = schema["type"]
    if not isinstance(value, PYTHON_TYPES[kind]) or (kind.startswith("int") and isinstance(value, bool)):
        raise SchemaError(f"field {schema.get('field')}: {value!r} is not {kind}")
    name = schema.get("name")
    if kind == "struct":
        fields = {f["field"]: f for f in schema["fields"]}
        extra = set(value) - set(fields)
        if extra:
            raise SchemaError(f"payload fields without a schema: {sorted(extra)}")
        return {k: connect_value(f, value.get(k)) for k, f in fields.items()}
    if name == "io.debezium.time.Date":
        return (EPOCH + datetime.timedelta(days=value)).isoformat()
    if name in TEMPORAL:
        return iso_from_units(value, *TEMPORAL[name])
    if name == "org.apache.kafka.connect.data.Decimal":
        unscaled = int.from_bytes(base64.b64decode(value), "big", signed=True)
        scale = int(schema["parameters"]["scale"])
        sign, digits = ("-" if unscaled < 0 else ""), str(abs(unscaled)).rjust(scale + 1, "0")
        return f"{sign}{digits[:-scale]}.{digits[-scale:]}" if scale else f"{sign}{digits}"
    if kind == "bytes":
        return "\\x" + base64.b64decode(value).hex()
    return value


def plain(doc, stats):
    """The payload of a Connect JSON document with a schema, converted; other documents as is."""
    if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:
        stats["connect_json"] = stats.get("connect_json", 0) + 1
        return connect_value(doc["schema"], doc["payload"])
    return doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout-s", type=float, default=60.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout_s

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        client_id="edfi-cdc-test-rebuild",
    )
    try:
        parts = consumer.partitions_for_topic(args.topic)
        if not parts:
            print(f"topic {args.topic} not found", file=sys.stderr)
            return 1
        tps = [TopicPartition(args.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        rows = {}
        stats = {"control": 0, "tombstones": 0}
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                left = {tp.partition: (consumer.position(tp), end[tp]) for tp in tps}
                print(f"end offsets not reached: {left}", file=sys.stderr)
                return 1
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    if m.offset >= end[tp]:
                        continue
                    if any(k == CONTROL_HEADER for k, _ in (m.headers or [])):
                        stats["control"] += 1
                        continue
                    if m.value is None:
                        stats["tombstones"] += 1
                        continue
                    try:
                        key = json.dumps(plain(json.loads(m.key), stats), sort_keys=True)
                        value = plain(json.loads(m.value), stats)
                    except SchemaError as e:
                        print(f"{tp} offset {m.offset}: {e}", file=sys.stderr)
                        return 1
                    op = value["op"]
                    stats[op] = stats.get(op, 0) + 1
                    if op in ("c", "u", "r"):
                        rows[key] = value["after"]
                    elif op == "d":
                        rows.pop(key, None)
                    else:
                        print(f"unexpected op {op!r} at {tp} offset {m.offset} without "
                              f"{CONTROL_HEADER}", file=sys.stderr)
                        return 1
        for key, after in sorted(rows.items()):
            print(json.dumps({"key": json.loads(key), "after": after}))
        print(json.dumps({"stats": stats}))
        return 0
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
