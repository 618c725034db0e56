"""An S3/Kinesis API server (moto) for one test: listens on a free loopback port, prints
`moto ready on HOST:PORT`, and exits when its standard input closes (the test ended or died).

One correction to moto's S3: it names the root element of the CompleteMultipartUpload reply
`CompleteMultipartUploadResponse`, where S3 (and its SDKs, which check) use
`CompleteMultipartUploadResult`; the reply is renamed on its way out.

moto's Kinesis (verified against 5.2.1) gets resharding wrong, so its model is patched below, before
the app is created, to behave as Kinesis does: records go only to open shards; a closed shard keeps
its records and ends (GetRecords gives no NextShardIterator and lists the ChildShards); sequence
numbers grow across parents and children; ListShards honours ShardFilter. Kinesis requests are
served one at a time (the server is threaded; moto's Kinesis model is not thread-safe: a stock
moto server loses records when PutRecords calls overlap, silently).

`MOTO_KINESIS_LOSE=EVERY,MOST` makes it lose records on purpose (see below); `MOTO_KINESIS_REORDER=MS`
holds each PutRecords call a random 0 to MS milliseconds before serving it, so that calls in flight
together are stored in any order, as Kinesis may store them; `MOTO_KINESIS_REFUSE_MARKERS=SHARD,N,TABLE,KIND`
throttles the snapshot markers of kind KIND of TABLE written to shard SHARD, N times in all;
`MOTO_KINESIS_HOLD=FILE,MS` holds one PutRecords call and refuses the next, once FILE exists."""
import base64
import io
import itertools
import json
import os
import random
import sys
import threading
import time

import moto
from moto.core.responses import ActionResult
from moto.core.utils import unix_time
from moto.kinesis.exceptions import InvalidArgumentError, ResourceNotFoundError
from moto.kinesis.models import KinesisBackend, Record, Shard, Stream
from moto.kinesis.responses import KinesisResponse
from moto.kinesis.utils import compose_new_shard_iterator, compose_shard_iterator, decompose_shard_iterator
from moto.server import DomainDispatcherApplication, create_backend_app
from moto.utilities.utils import md5_hash
from werkzeug.serving import make_server

VERIFIED_MOTO = "5.2.1"  # the Kinesis patches below replace moto internals as they are in this version
if moto.__version__ != VERIFIED_MOTO:
    print(f"moto_server.py: moto {moto.__version__}, Kinesis patches verified on {VERIFIED_MOTO}", file=sys.stderr)

# ---------------------------------------------------------------------------------------------
# Kinesis: shards and sequence numbers

# Kinesis sequence numbers are 56-digit decimal strings; these are too (so a client that parses
# them into a u64/u128 fails here as it would against Kinesis). One counter for the whole server:
# numbers only grow, within a shard in write order, and a child's are above its parents'.
_sequence_numbers = itertools.count(49600 * 10**51 + 1)

_shard_init = Shard.__init__


def _shard_init_with_sequence_range(self, *args, **kwargs):
    """A shard's sequence number range starts where the stream was when the shard was created
    (moto reports 0 for an empty shard) and, once closed, ends above its last record."""
    _shard_init(self, *args, **kwargs)
    self.starting_sequence_number = next(_sequence_numbers)
    self.ending_sequence_number = None
    self.created_at = unix_time()
    self.closed_at = None


# Fault injection for the tests (`MOTO_KINESIS_LOSE=EVERY,MOST`): every EVERY-th change record
# (a record without a `sent` count, i.e. not a watermark or snapshot marker) is acknowledged but
# not stored, MOST times at most — a stream that loses records it acknowledged.
_lose = [int(n) for n in os.environ.get("MOTO_KINESIS_LOSE", "0,0").split(",")]
_changes = itertools.count(1)
_lost = [0]


def _loses(data):
    every, most = _lose
    if every == 0 or _lost[0] >= most or b'"sent"' in base64.b64decode(data):
        return False
    if next(_changes) % every:
        return False
    _lost[0] += 1
    return True


def _shard_put_record(self, partition_key, data, explicit_hash_key):
    """Sequence numbers come from the one counter (moto counts from 1 in every shard, so a child
    shard repeats its parent's numbers)."""
    sequence_number = next(_sequence_numbers)
    if not _loses(data):
        self.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
    return str(sequence_number)


def _shard_close(self):
    """Closing a shard (split or merge) fixes its EndingSequenceNumber; its records stay in it."""
    self.is_open = False
    self.ending_sequence_number = next(_sequence_numbers)
    self.closed_at = unix_time()


def _shard_max_sequence_number(self):
    """Where LATEST starts: after the last record, or at the start of an empty shard."""
    if self.records:
        return next(reversed(self.records))
    return self.starting_sequence_number - 1


def _shard_to_json(self):
    """SequenceNumberRange from the shard's own range, not from its first and last records."""
    shard = {
        "ShardId": self.shard_id,
        "HashKeyRange": {"StartingHashKey": str(self.starting_hash), "EndingHashKey": str(self.ending_hash)},
        "SequenceNumberRange": {"StartingSequenceNumber": str(self.starting_sequence_number)},
    }
    if self.parent:
        shard["ParentShardId"] = self.parent
    if self.adjacent_parent:
        shard["AdjacentParentShardId"] = self.adjacent_parent
    if not self.is_open:
        shard["SequenceNumberRange"]["EndingSequenceNumber"] = str(self.ending_sequence_number)
    return shard


Shard.__init__ = _shard_init_with_sequence_range
Shard.put_record = _shard_put_record
Shard.close = _shard_close
Shard.get_max_sequence_number = _shard_max_sequence_number
Shard.to_json = _shard_to_json

# ---------------------------------------------------------------------------------------------
# Kinesis: routing and resharding

_stream_init = Stream.__init__


def _stream_init_dating_shards(self, *args, **kwargs):
    """The stream's first shards date from its creation (for ListShards' time filters)."""
    _stream_init(self, *args, **kwargs)
    for shard in self.shards.values():
        shard.created_at = unix_time(self.creation_datetime)


def _stream_get_shard_for_key(self, partition_key, explicit_hash_key):
    """A record goes to the OPEN shard whose HashKeyRange holds its hash, both ends included
    (moto also picks closed shards, and excludes EndingHashKey: no shard, a 500)."""
    if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= 256:
        raise InvalidArgumentError("PartitionKey must be 1 to 256 characters.")
    if explicit_hash_key:
        try:
            hash_key = int(explicit_hash_key)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"Invalid ExplicitHashKey {explicit_hash_key!r}.")
        if not 0 <= hash_key < 2**128:
            raise InvalidArgumentError(f"ExplicitHashKey {explicit_hash_key} is outside [0, 2^128).")
    else:
        hash_key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= hash_key <= shard.ending_hash:
            return shard
    raise InvalidArgumentError(f"No open shard holds hash key {hash_key}.")


def _next_shard_index(stream):
    return max(shard._shard_id for shard in stream.shards.values()) + 1


def _open_shard(stream, shard_id):
    shard = stream.get_shard(shard_id)
    if not shard.is_open:
        raise InvalidArgumentError(
            f"Shard {shard_id} in stream {stream.stream_name} has already been merged or split,"
            " and thus is not eligible for merging or splitting."
        )
    return shard


def _stream_split_shard(self, shard_to_split, new_starting_hash_key):
    """SplitShard closes the parent, which keeps its records, and opens two children over its
    range (moto re-writes the parent's records, and later ones, into the parent)."""
    parent = _open_shard(self, shard_to_split)
    new_start = int(new_starting_hash_key)
    if not parent.starting_hash < new_start <= parent.ending_hash:
        raise InvalidArgumentError(
            f"NewStartingHashKey {new_start} used in SplitShard() on shard {shard_to_split} in stream"
            f" {self.stream_name} is not greater than the shard's StartingHashKey {parent.starting_hash}"
            f" and at most its EndingHashKey {parent.ending_hash}."
        )
    parent.close()
    index = _next_shard_index(self)
    for offset, (start, end) in enumerate([(parent.starting_hash, new_start - 1), (new_start, parent.ending_hash)]):
        child = Shard(index + offset, start, end, parent=parent.shard_id)
        self.shards[child.shard_id] = child


def _stream_merge_shards(self, shard_to_merge, adjacent_shard_to_merge):
    """MergeShards closes both parents, which keep their records, and opens one child over both
    ranges, whichever order they are given in (moto copies the parents' records into the child,
    and rejects an adjacent shard that comes first)."""
    shard = _open_shard(self, shard_to_merge)
    adjacent = _open_shard(self, adjacent_shard_to_merge)
    lower, upper = sorted([shard, adjacent], key=lambda s: s.starting_hash)
    if lower.ending_hash + 1 != upper.starting_hash:
        raise InvalidArgumentError(f"Shards {shard_to_merge} and {adjacent_shard_to_merge} are not adjacent.")
    shard.close()
    adjacent.close()
    child = Shard(
        _next_shard_index(self),
        lower.starting_hash,
        upper.ending_hash,
        parent=shard.shard_id,
        adjacent_parent=adjacent.shard_id,
    )
    self.shards[child.shard_id] = child


def _open_shards(stream):
    return sorted((s for s in stream.shards.values() if s.is_open), key=lambda s: s.starting_hash)


def _stream_update_shard_count(self, target_shard_count):
    """UpdateShardCount (UNIFORM_SCALING) as moto does it, split every open shard once then merge
    neighbours, but with exact midpoints (moto halves 128-bit keys in floating point) and with
    Kinesis' limits: at most double, at least half the open shards."""
    if self.stream_mode.get("StreamMode", "") == "ON_DEMAND":
        raise InvalidArgumentError(f"Stream {self.stream_name} is in On-Demand mode.")
    current = len(_open_shards(self))
    if not (current + 1) // 2 <= target_shard_count <= 2 * current:
        raise InvalidArgumentError(
            f"UpdateShardCount from {current} to {target_shard_count} shards: the target must be"
            f" between half and double the open shard count."
        )
    if target_shard_count > current:
        for shard in _open_shards(self):
            self.split_shard(shard.shard_id, str((shard.starting_hash + shard.ending_hash + 1) // 2))
    while len(_open_shards(self)) > target_shard_count:
        shards = _open_shards(self)
        merges = len(shards) - target_shard_count
        for lower, upper in list(zip(shards[0::2], shards[1::2]))[:merges]:
            self.merge_shards(lower.shard_id, upper.shard_id)
    self.shard_count = target_shard_count


_stream_to_json_summary = Stream.to_json_summary


def _stream_to_json_summary_counting_open_shards(self):
    """OpenShardCount counts the open shards (moto keeps the count from CreateStream)."""
    summary = _stream_to_json_summary(self)
    summary["StreamDescriptionSummary"]["OpenShardCount"] = len(_open_shards(self))
    return summary


Stream.__init__ = _stream_init_dating_shards
Stream.get_shard_for_key = _stream_get_shard_for_key
Stream.split_shard = _stream_split_shard
Stream.merge_shards = _stream_merge_shards
Stream.update_shard_count = _stream_update_shard_count
Stream.to_json_summary = _stream_to_json_summary_counting_open_shards

# ---------------------------------------------------------------------------------------------
# Kinesis: reading


def _backend_get_shard_iterator(
    self, stream_arn, stream_name, shard_id, shard_iterator_type, starting_sequence_number, at_timestamp
):
    """The iterator names the stream even when the caller gave only its ARN (moto writes "None"
    and GetRecords fails), and a sequence number must belong to the shard it is used with."""
    stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
    if shard_id not in stream.shards:
        raise ResourceNotFoundError(f"Shard {shard_id} in stream {stream.stream_name} does not exist")
    shard = stream.shards[shard_id]
    if shard_iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        try:
            number = int(starting_sequence_number)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"Invalid StartingSequenceNumber {starting_sequence_number!r}.")
        owner = next((s.shard_id for s in stream.shards.values() if number in s.records), shard_id)
        if owner != shard_id:
            raise InvalidArgumentError(
                f"Invalid StartingSequenceNumber. It encodes {owner}, while it was used in a call"
                f" to a shard with {shard_id}"
            )
    return compose_new_shard_iterator(
        stream.stream_name, shard, shard_iterator_type, starting_sequence_number, at_timestamp
    )


def _child_shards(stream, shard):
    children = [s for s in stream.shards.values() if shard.shard_id in (s.parent, s.adjacent_parent)]
    return [
        {
            "ShardId": child.shard_id,
            "ParentShards": [p for p in (child.parent, child.adjacent_parent) if p],
            "HashKeyRange": {"StartingHashKey": str(child.starting_hash), "EndingHashKey": str(child.ending_hash)},
        }
        for child in sorted(children, key=lambda s: s.shard_id)
    ]


def _backend_get_records(self, stream_arn, shard_iterator, limit):
    """GetRecords on a closed shard returns its remaining records; the reply that reaches its end
    (with those last records, or none) has no NextShardIterator and lists the ChildShards (moto
    hands out iterators on a closed shard forever). Limit defaults to 10000, as in Kinesis.
    Returns (next iterator or None, records, MillisBehindLatest, child shards or None)."""
    stream_name, shard_id, last_sequence_number = decompose_shard_iterator(shard_iterator)
    stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
    shard = stream.get_shard(shard_id)
    after = int(last_sequence_number)
    pending = [record for number, record in shard.records.items() if number > after]
    records = pending[: int(limit or 10000)]
    if records:
        after = records[-1].sequence_number
    millis_behind = 0
    if records and shard.is_open:
        millis_behind = int((next(reversed(shard.records.values())).created_at - records[-1].created_at) * 1000)
    if not shard.is_open and len(records) == len(pending):
        return None, records, 0, _child_shards(stream, shard)
    return compose_shard_iterator(stream.stream_name, shard, after), records, millis_behind, None


def _response_get_records(self):
    """The GetRecords reply carries ChildShards and leaves NextShardIterator out at a shard's end."""
    next_iterator, records, millis_behind, child_shards = self.kinesis_backend.get_records(
        self._get_param("StreamARN"), self._get_param("ShardIterator"), self._get_param("Limit")
    )
    reply = {"Records": [record.to_json() for record in records], "MillisBehindLatest": millis_behind}
    if next_iterator is not None:
        reply["NextShardIterator"] = next_iterator
    if child_shards is not None:
        reply["ChildShards"] = child_shards
    return ActionResult(reply)


# Fault injection for the tests (`MOTO_KINESIS_REFUSE_MARKERS=SHARD,N,TABLE,KIND`): a snapshot
# marker of kind KIND (`snapshot_chunk`, `snapshot_done`) of table TABLE (`schema.table`) addressed
# to shard SHARD (its `shard` field) is refused as Kinesis refuses a record of a shard over its
# write limit, N times in all; the call's other records are stored.
_refuse = os.environ.get("MOTO_KINESIS_REFUSE_MARKERS", ",0,,snapshot_chunk").split(",")
_refused = [0]
_backend_put_records_stock = KinesisBackend.put_records


def _refuses(record):
    shard, most = _refuse[0], int(_refuse[1])
    if _refused[0] >= most:
        return False
    data = base64.b64decode(record.get("Data", ""))
    if f'"{_refuse[3]}"'.encode() not in data:
        return False
    doc = json.loads(data)
    if doc.get("shard") != shard or doc["key"].get("snapshot") != _refuse[2]:
        return False
    _refused[0] += 1
    return True


def _backend_put_records(self, stream_arn, stream_name, records):
    refused = [_refuses(r) for r in records]
    if not any(refused):
        return _backend_put_records_stock(self, stream_arn, stream_name, records)
    kept = [r for r, no in zip(records, refused) if not no]
    reply = _backend_put_records_stock(self, stream_arn, stream_name, kept)
    stored = iter(reply["Records"])
    reply["Records"] = [
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": f"Rate exceeded for shard {_refuse[0]}"}
        if no
        else next(stored)
        for no in refused
    ]
    reply["FailedRecordCount"] = sum(refused)
    return reply


KinesisBackend.put_records = _backend_put_records
KinesisBackend.get_shard_iterator = _backend_get_shard_iterator
KinesisBackend.get_records = _backend_get_records
KinesisResponse.get_records = _response_get_records

# ---------------------------------------------------------------------------------------------
# Kinesis: ListShards


def _filter_shards(stream, shard_filter):
    """ShardFilter as Kinesis applies it. Nothing is ever trimmed here, so the trim horizon is the
    stream's creation: AT_TRIM_HORIZON gives the shards open then (the stream's first shards),
    FROM_TRIM_HORIZON every shard, AT_LATEST the open shards."""
    shards = sorted(stream.shards.values(), key=lambda s: s.shard_id)
    if not shard_filter:
        return shards
    kind = shard_filter.get("Type")
    created = unix_time(stream.creation_datetime)

    def open_at(when):
        return [s for s in shards if s.created_at <= when and (s.is_open or s.closed_at >= when)]

    def open_since(when):
        return [s for s in shards if s.is_open or s.closed_at >= when]

    if kind == "AFTER_SHARD_ID":
        if not shard_filter.get("ShardId"):
            raise InvalidArgumentError("ShardFilter AFTER_SHARD_ID needs a ShardId.")
        return [s for s in shards if s.shard_id > shard_filter["ShardId"]]
    if kind == "AT_TRIM_HORIZON":
        return open_at(created)
    if kind == "FROM_TRIM_HORIZON":
        return shards
    if kind == "AT_LATEST":
        return [s for s in shards if s.is_open]
    if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP"):
        if shard_filter.get("Timestamp") is None:
            raise InvalidArgumentError(f"ShardFilter {kind} needs a Timestamp.")
        when = max(float(shard_filter["Timestamp"]), created)
        return open_at(when) if kind == "AT_TIMESTAMP" else open_since(when)
    raise InvalidArgumentError(f"Unknown ShardFilter type {kind!r}.")


def _response_list_shards(self):
    """ListShards honours ShardFilter and ExclusiveStartShardId (moto ignores both), and its
    NextToken names the stream and filter, so (as Kinesis requires) the next call passes only
    the token, without StreamName."""
    next_token = self._get_param("NextToken")
    stream_name = self._get_param("StreamName")
    start_after = self._get_param("ExclusiveStartShardId")
    max_results = int(self._get_param("MaxResults") or 10000)
    if next_token:
        if stream_name or start_after:
            raise InvalidArgumentError("NextToken cannot be combined with StreamName or ExclusiveStartShardId.")
        try:
            token = json.loads(base64.b64decode(next_token))
            stream_name, shard_filter, start_after = token["stream"], token["filter"], token["after"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgumentError(f"Invalid NextToken {next_token!r}.")
        stream = self.kinesis_backend.describe_stream(stream_arn=None, stream_name=stream_name)
    else:
        shard_filter = self._get_param("ShardFilter")
        stream = self.kinesis_backend.describe_stream(self._get_param("StreamARN"), stream_name)
    shards = [s for s in _filter_shards(stream, shard_filter) if not start_after or s.shard_id > start_after]
    page = shards[:max_results]
    reply = {"Shards": [shard.to_json() for shard in page]}
    if len(shards) > len(page):
        token = {"stream": stream.stream_name, "filter": shard_filter, "after": page[-1].shard_id}
        reply["NextToken"] = base64.b64encode(json.dumps(token).encode()).decode()
    return ActionResult(reply)


KinesisResponse.list_shards = _response_list_shards

# ---------------------------------------------------------------------------------------------
# The server

moto_app = DomainDispatcherApplication(create_backend_app)
kinesis_lock = threading.Lock()


_reorder_ms = int(os.environ.get("MOTO_KINESIS_REORDER", "0"))

# Fault injection for the tests (`MOTO_KINESIS_HOLD=FILE,MS`): a call that reached Kinesis is
# stored even if its caller gave up on it, and may be stored late. Once the file FILE exists (it is
# then removed), the next PutRecords call of 100 records or more is held, and the PutRecords call
# after it, of any size, is refused as invalid (which the producer does not retry: the cycle is given up). The
# held call is stored as soon as later PutRecords calls have stored a record of each of its rows
# (the same explicit hash key), within the call that completes them, before that call is
# answered; or after MS milliseconds. FILE.stored is written when it is stored.
_hold = os.environ.get("MOTO_KINESIS_HOLD", ",0").split(",")
_hold_file, _hold_ms = _hold[0], int(_hold[1])
_hold_lock = threading.Lock()
_refuse_next = [False]


def _hash_keys(body):
    return {r.get("ExplicitHashKey") or r["PartitionKey"] for r in json.loads(body).get("Records", [])}


class _Held:
    def __init__(self, environ, keys):
        self.environ = environ
        self.waiting = keys
        self.stored = threading.Event()
        self.reply = None

    def store(self):
        """Store the held call (with kinesis_lock held), once."""
        if self.stored.is_set():
            return
        answer = {}

        def keep(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        self.reply = (answer, [b"".join(moto_app(self.environ, keep))])
        open(_hold_file + ".stored", "w").close()
        self.stored.set()


_held = [None]


def _hold_or_refuse(environ):
    """("hold", held), ("refuse", None), ("covers", keys) or (None, None), for a PutRecords call."""
    armed = bool(_hold_file) and os.path.exists(_hold_file)
    if not armed and _held[0] is None and not _refuse_next[0]:
        return None, None
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    keys = _hash_keys(body)
    with _hold_lock:
        if _refuse_next[0]:
            _refuse_next[0] = False
            return "refuse", None
        if armed and _held[0] is None and os.path.exists(_hold_file) \
                and len(json.loads(body).get("Records", [])) >= 100:
            os.remove(_hold_file)
            _held[0] = _Held(environ, keys)
            _refuse_next[0] = True
            return "hold", _held[0]
    return "covers", keys


def _refuse_call(start_response):
    body = json.dumps({"__type": "ValidationException", "message": "refused by the test server (MOTO_KINESIS_HOLD)"}).encode()
    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
    return [body]


def _answer_held(held, start_response):
    if not held.stored.wait(_hold_ms / 1000):
        with kinesis_lock:
            held.store()
    with _hold_lock:
        _held[0] = None
    answer, reply = held.reply
    start_response(answer["status"], answer["headers"])
    return reply


def app(environ, start_response):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("Kinesis_"):
        action, arg = _hold_or_refuse(environ) if target.endswith(".PutRecords") else (None, None)
        if action == "refuse":
            return _refuse_call(start_response)
        if action == "hold":
            return _answer_held(arg, start_response)
        if _reorder_ms and target.endswith(".PutRecords"):
            time.sleep(random.uniform(0, _reorder_ms / 1000))
        with kinesis_lock:
            reply = [b"".join(moto_app(environ, start_response))]
            held = _held[0]
            if action == "covers" and held is not None:
                held.waiting -= arg
                if not held.waiting:
                    held.store()
            return reply
    completing = environ["REQUEST_METHOD"] == "POST" and "uploadId=" in environ.get("QUERY_STRING", "")
    if not completing:
        return moto_app(environ, start_response)
    reply = {}

    def capture(status, headers, exc_info=None):
        reply["status"], reply["headers"] = status, headers
        return lambda data: None

    body = b"".join(moto_app(environ, capture))
    body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
    headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in reply["headers"]]
    start_response(reply["status"], headers)
    return [body]


server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
host, port = server.server_address[:2]
print(f"moto ready on {host}:{port}", flush=True)
sys.stdin.read()
server.shutdown()
