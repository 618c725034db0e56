"""Independent Kafka reader for the tests (kafka-python, no consumer group).

Usage: kafka_read.py --bootstrap HOST:PORT --topic T [--topic T2 | --topic T1,T2]
       [--max-messages N] [--timeout-s S]

Assigns every partition of the topics (as they appear: a topic may be created after the start)
from the beginning, and prints one JSON object per message:
{"topic", "partition", "offset", "key", "value", "timestamp", "headers"}, where key and value
are the bytes parsed as JSON, null when absent (a tombstone's value); bytes that are not JSON
are given as text in "key_raw" / "value_raw" with key / value null. Headers are
[[name, text or null], ...]. Exits 0 after N messages or when the timeout ends.
"""
import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def decode(raw, name, out):
    if raw is None:
        out[name] = None
        return
    try:
        out[name] = json.loads(raw)
    except ValueError:
        out[name] = None
        out[name + "_raw"] = raw.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--max-messages", type=int, default=0, help="0: read until the timeout")
    ap.add_argument("--timeout-s", type=float, default=30.0)
    args = ap.parse_args()
    topics = [t for arg in args.topic for t in arg.split(",") if t]
    deadline = time.monotonic() + args.timeout_s

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        client_id="edfi-cdc-test-reader",
    )
    assigned = {}  # TopicPartition -> next offset to read, or None (from the beginning)
    count = 0
    last_check = 0.0
    try:
        while time.monotonic() < deadline:
            missing = [t for t in topics if not any(tp.topic == t for tp in assigned)]
            if missing and time.monotonic() - last_check >= 0.5:
                last_check = time.monotonic()
                found = []
                for t in missing:
                    parts = consumer.partitions_for_topic(t)
                    if parts:
                        found += [TopicPartition(t, p) for p in sorted(parts)]
                if found:
                    for tp in found:
                        assigned[tp] = None
                    consumer.assign(list(assigned))
                    for tp, nxt in assigned.items():
                        if nxt is None:
                            consumer.seek_to_beginning(tp)
                        else:
                            consumer.seek(tp, nxt)
            if not assigned:
                time.sleep(0.2)
                continue
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            batches = consumer.poll(timeout_ms=min(500, left_ms))
            for tp, msgs in batches.items():
                for m in msgs:
                    out = {"topic": m.topic, "partition": m.partition, "offset": m.offset}
                    decode(m.key, "key", out)
                    decode(m.value, "value", out)
                    out["timestamp"] = m.timestamp
                    out["headers"] = [
                        [k, None if v is None else v.decode("utf-8", "replace")]
                        for k, v in (m.headers or [])
                    ]
                    print(json.dumps(out), flush=True)
                    assigned[tp] = m.offset + 1
                    count += 1
                    if args.max_messages and count >= args.max_messages:
                        return
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
