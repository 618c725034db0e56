"""An independent consumer (kafka-python, not librdkafka) that rebuilds one table from its topic.

Usage: kafka_rebuild.py --bootstrap HOST:PORT --topic T [--timeout-s S]

Reads every partition of the topic from the beginning up to the end offsets it finds at its
start, as any downstream consumer would: records with the header `edfi-cdc-control` are skipped
by that header alone (their value is never parsed); a tombstone (null value) is skipped; `c`,
`u` and `r` put `after` under the record's key, `d` removes the key. Any other `op` on a record
without the header is an error (exit 1). Prints one JSON line per row left,
{"key": …, "after": …}, and last {"stats": {"control": N, "tombstones": N, "c": N, …}}.
Exits 1 when the end offsets are not reached within the timeout.
"""
import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition

CONTROL_HEADER = "edfi-cdc-control"


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
                    key = json.dumps(json.loads(m.key), sort_keys=True)
                    value = json.loads(m.value)
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
