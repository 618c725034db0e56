"""Checks that a Kinesis endpoint (moto via tests/support/moto_server.py) reshards as Kinesis does.
Starts nothing itself:

    python3 tests/support/kinesis_reshard_check.py --endpoint http://127.0.0.1:PORT

Creates a 2-shard stream and writes keyed records; splits a shard and writes; merges two adjacent
shards and writes; UpdateShardCount 2 -> 3 and writes. Then reads every shard, parents before
children (following GetRecords' ChildShards, as a consumer does), and asserts:
  - every record is read exactly once, from the shard PutRecords said it went to, always an open one;
  - per partition key, records come out in write order;
  - sequence numbers are decimal strings, increasing within a shard, children's above parents';
  - a closed shard ends with no NextShardIterator and with ChildShards that match ListShards;
  - ListShards with ShardFilter AT_LATEST gives only the open shards (AT_TRIM_HORIZON the first
    ones, FROM_TRIM_HORIZON all), with parent links;
  - an ExplicitHashKey equal to a shard's StartingHashKey or EndingHashKey goes to that shard;
  - AT_SEQUENCE_NUMBER / AFTER_SEQUENCE_NUMBER resume mid-shard, and reject another shard's number;
  - an iterator got with only the StreamARN works.
Exits non-zero (AssertionError) on the first failure."""
import argparse
import json
import os
import time
from collections import defaultdict

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

KEYS = [f"key-{i}" for i in range(24)]


class Check:
    def __init__(self, endpoint):
        self.kinesis = boto3.client(
            "kinesis",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="edfi-cdc-test",
            aws_secret_access_key="edfi-cdc-test",
            config=Config(retries={"max_attempts": 1}),
        )
        self.stream = f"reshard-check-{os.getpid()}-{int(time.time())}"
        self.written = []  # (key, n, shard id per PutRecords), in write order
        self.counter = 0

    def shards(self, **kwargs):
        shards, token = [], None
        while True:
            page = self.kinesis.list_shards(**({"NextToken": token} if token else {"StreamName": self.stream, **kwargs}))
            shards += page["Shards"]
            token = page.get("NextToken")
            if not token:
                return {s["ShardId"]: s for s in shards}

    def open_shards(self):
        return {i: s for i, s in self.shards().items() if "EndingSequenceNumber" not in s["SequenceNumberRange"]}

    def write(self, phase, rounds=3):
        """A few records per key, several PutRecords calls, each record checked to land on an open shard."""
        open_now = self.open_shards()
        for _ in range(rounds):
            batch = []
            for key in KEYS:
                self.counter += 1
                batch.append({"key": key, "n": self.counter, "phase": phase})
            reply = self.kinesis.put_records(
                StreamName=self.stream,
                Records=[{"Data": json.dumps(r).encode(), "PartitionKey": r["key"]} for r in batch],
            )
            assert reply["FailedRecordCount"] == 0, reply
            for record, result in zip(batch, reply["Records"]):
                assert result["ShardId"] in open_now, f"{phase}: record went to closed shard {result['ShardId']}"
                self.written.append((record["key"], record["n"], result["ShardId"]))
        self.check_edges(phase)

    def check_edges(self, phase):
        """ExplicitHashKey at both ends of every open shard's range goes to that shard."""
        for shard_id, shard in self.open_shards().items():
            for end in ("StartingHashKey", "EndingHashKey"):
                self.counter += 1
                record = {"key": "edge", "n": self.counter, "phase": phase}
                reply = self.kinesis.put_records(
                    StreamName=self.stream,
                    Records=[{
                        "Data": json.dumps(record).encode(),
                        "PartitionKey": "edge",
                        "ExplicitHashKey": shard["HashKeyRange"][end],
                    }],
                )
                got = reply["Records"][0]
                assert "ErrorCode" not in got, got
                assert got["ShardId"] == shard_id, f"{phase}: {end} of {shard_id} went to {got['ShardId']}"
                self.written.append(("edge", self.counter, got["ShardId"]))

    def check_listing(self, phase):
        everything = self.shards()
        open_ids = set(self.open_shards())
        latest = self.shards(ShardFilter={"Type": "AT_LATEST"})
        assert set(latest) == open_ids, f"{phase}: AT_LATEST gave {sorted(latest)}, open {sorted(open_ids)}"
        assert set(self.shards(ShardFilter={"Type": "FROM_TRIM_HORIZON"})) == set(everything)
        first = {i for i, s in everything.items() if "ParentShardId" not in s}
        at_trim = set(self.shards(ShardFilter={"Type": "AT_TRIM_HORIZON"}))
        assert at_trim == first, f"{phase}: AT_TRIM_HORIZON gave {sorted(at_trim)}, want {sorted(first)}"
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        assert summary["OpenShardCount"] == len(open_ids), summary
        described = {s["ShardId"]: s for s in self.kinesis.describe_stream(StreamName=self.stream)["StreamDescription"]["Shards"]}
        assert described == everything, f"{phase}: DescribeStream and ListShards disagree"
        # hash ranges of the open shards tile [0, 2^128) exactly
        ranges = sorted((int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in latest.values())
        assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1, ranges
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), ranges
        print(f"  {phase}: {len(everything)} shards, open {sorted(open_ids)}")

    def read_shard(self, shard_id):
        """Reads one shard to its end (closed) or to an empty reply (open), 5 records a call.
        Returns (records, child shards or None)."""
        iterator = self.kinesis.get_shard_iterator(
            StreamName=self.stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = []
        while True:
            reply = self.kinesis.get_records(ShardIterator=iterator, Limit=5)
            records += reply["Records"]
            if "NextShardIterator" not in reply or reply["NextShardIterator"] is None:
                assert "ChildShards" in reply, f"{shard_id}: end of shard without ChildShards"
                return records, reply["ChildShards"]
            assert not reply.get("ChildShards"), f"{shard_id}: ChildShards before the end of the shard"
            if not reply["Records"]:
                return records, None
            iterator = reply["NextShardIterator"]

    def read_all(self):
        """Parents before children: a shard is read once all its parents have ended."""
        listed = self.shards()
        parents = {i: [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p] for i, s in listed.items()}
        ready = sorted(i for i, ps in parents.items() if not ps)
        done, order, by_shard = set(), [], {}
        while ready:
            shard_id = ready.pop(0)
            records, children = self.read_shard(shard_id)
            shard = listed[shard_id]
            closed = "EndingSequenceNumber" in shard["SequenceNumberRange"]
            assert (children is not None) == closed, f"{shard_id}: closed={closed} but ChildShards={children}"
            done.add(shard_id)
            order.append(shard_id)
            by_shard[shard_id] = records
            for child in children or []:
                c = listed[child["ShardId"]]
                assert sorted(child["ParentShards"]) == sorted(parents[c["ShardId"]]), child
                assert child["HashKeyRange"] == c["HashKeyRange"], child
                if all(p in done for p in parents[c["ShardId"]]) and c["ShardId"] not in done and c["ShardId"] not in ready:
                    ready.append(c["ShardId"])
        assert done == set(listed), f"never reached {sorted(set(listed) - done)}"
        return listed, order, by_shard

    def check_sequence_numbers(self, listed, by_shard):
        for shard_id, records in by_shard.items():
            numbers = [r["SequenceNumber"] for r in records]
            assert all(n.isdigit() for n in numbers), numbers
            ints = [int(n) for n in numbers]
            assert ints == sorted(set(ints)), f"{shard_id}: sequence numbers not increasing"
            rng = listed[shard_id]["SequenceNumberRange"]
            start = int(rng["StartingSequenceNumber"])
            end = int(rng.get("EndingSequenceNumber", 10**130))
            assert all(start <= n <= end for n in ints), f"{shard_id}: records outside {rng}"
            for parent in (listed[shard_id].get("ParentShardId"), listed[shard_id].get("AdjacentParentShardId")):
                if parent:
                    parent_end = int(listed[parent]["SequenceNumberRange"]["EndingSequenceNumber"])
                    assert start > parent_end, f"{shard_id} starts at {start}, not above parent {parent} ({parent_end})"
                    assert all(int(r["SequenceNumber"]) < start for r in by_shard[parent])

    def check_resume(self, listed, by_shard):
        """AT/AFTER_SEQUENCE_NUMBER from the middle of a closed shard, and another shard's number refused."""
        shard_id = next(i for i, s in listed.items() if "EndingSequenceNumber" in s["SequenceNumberRange"] and len(by_shard[i]) > 4)
        records = by_shard[shard_id]
        middle = records[len(records) // 2]["SequenceNumber"]
        for kind, want in (("AT_SEQUENCE_NUMBER", records[len(records) // 2:]), ("AFTER_SEQUENCE_NUMBER", records[len(records) // 2 + 1:])):
            iterator = self.kinesis.get_shard_iterator(
                StreamName=self.stream, ShardId=shard_id, ShardIteratorType=kind, StartingSequenceNumber=middle
            )["ShardIterator"]
            got = []
            while iterator:
                reply = self.kinesis.get_records(ShardIterator=iterator)
                got += reply["Records"]
                iterator = reply.get("NextShardIterator")
            assert [r["SequenceNumber"] for r in got] == [r["SequenceNumber"] for r in want], kind
        other = next(i for i in listed if i != shard_id and by_shard[i])
        try:
            self.kinesis.get_shard_iterator(
                StreamName=self.stream, ShardId=other, ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=middle
            )
            raise AssertionError(f"{other} accepted a sequence number of {shard_id}")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidArgumentException", e.response
        arn = self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]["StreamARN"]
        iterator = self.kinesis.get_shard_iterator(StreamARN=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        assert len(self.kinesis.get_records(ShardIterator=iterator, StreamARN=arn)["Records"]) > 0

    def run(self):
        k = self.kinesis
        k.create_stream(StreamName=self.stream, ShardCount=2)
        assert k.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        self.check_listing("created")
        self.write("before split")

        first = sorted(self.open_shards().values(), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))[0]
        lo, hi = int(first["HashKeyRange"]["StartingHashKey"]), int(first["HashKeyRange"]["EndingHashKey"])
        k.split_shard(StreamName=self.stream, ShardToSplit=first["ShardId"], NewStartingHashKey=str((lo + hi + 1) // 2))
        self.check_listing("after split")
        self.write("after split")

        by_hash = sorted(self.open_shards().values(), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        # merge the upper half of the split with its neighbour, naming the upper shard first
        k.merge_shards(StreamName=self.stream, ShardToMerge=by_hash[2]["ShardId"], AdjacentShardToMerge=by_hash[1]["ShardId"])
        self.check_listing("after merge")
        self.write("after merge")

        k.update_shard_count(StreamName=self.stream, TargetShardCount=3, ScalingType="UNIFORM_SCALING")
        assert len(self.open_shards()) == 3
        self.check_listing("after UpdateShardCount 3")
        self.write("after UpdateShardCount")

        listed, order, by_shard = self.read_all()
        print(f"  read order: {' '.join(s.replace('shardId-', '') for s in order)}")
        read = [(json.loads(r["Data"])["key"], json.loads(r["Data"])["n"], shard_id) for shard_id in order for r in by_shard[shard_id]]
        assert sorted(read) == sorted(self.written), (
            f"read {len(read)} records, wrote {len(self.written)}; "
            f"missing {sorted(set(self.written) - set(read))[:5]}, extra {sorted(set(read) - set(self.written))[:5]}"
        )
        assert len(set(read)) == len(read), "a record was read twice"
        per_key = defaultdict(list)
        for key, n, _ in read:
            if key != "edge":  # routed by ExplicitHashKey to several shards: no order to keep
                per_key[key].append(n)
        for key, ns in per_key.items():
            assert ns == sorted(ns), f"{key}: read out of write order: {ns}"
        self.check_sequence_numbers(listed, by_shard)
        self.check_resume(listed, by_shard)
        closed = sum("EndingSequenceNumber" in s["SequenceNumberRange"] for s in listed.values())
        print(
            f"OK: {len(read)} records over {len(listed)} shards ({closed} closed) read exactly once, "
            f"in write order for each of {len(per_key)} keys; sample sequence number {read and by_shard[order[0]][0]['SequenceNumber']}"
        )
        k.delete_stream(StreamName=self.stream)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:PORT")
    Check(parser.parse_args().endpoint).run()
