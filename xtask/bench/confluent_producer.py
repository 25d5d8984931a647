"""Reference producer for `cargo xtask bench`: librdkafka through
confluent-kafka, configured like a careful Java/kafkajs-compatible
producer (linger.ms 5, acks all, murmur2 partitioner).

Usage: confluent_producer.py BROKERS TOPIC EVENTS [idempotent]
Prints `RESULT confluent_kafka <events/s>` and `CPU confluent_kafka <µs per
event>` (`confluent_kafka_idempotent` with `enable.idempotence=true`) (this process, librdkafka's threads included), and with
MES_BENCH_BROKER_PID the broker's `CPU broker_confluent_kafka` meanwhile.
"""

import glob
import json
import os
import sys
import time

from confluent_kafka import Producer

brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
idempotent = sys.argv[4:5] == ["idempotent"]
name = "confluent_kafka_idempotent" if idempotent else "confluent_kafka"
producer = Producer({
    "enable.idempotence": idempotent,
    "bootstrap.servers": brokers,
    "linger.ms": 5,
    "acks": "all",
    "partitioner": "murmur2_random",
    "queue.buffering.max.messages": count + 1000,
    "queue.buffering.max.kbytes": 2097151,
})

# Pre-built records of the same size as the Rust publisher's (about 1 KB with
# headers), so the producer's own work is what is measured.
pad = "x" * 640
records = []
for i in range(count):
    value = json.dumps({
        "specversion": "1.0", "type": "bench.thing.happened", "source": "bench",
        "id": f"evt_{i:026d}", "time": "2025-10-18T12:14:56.789Z",
        "datacontenttype": "application/json", "entityid": f"E-{i % 500}",
        "data": {"seq": i, "pad": pad},
    }).encode()
    headers = [("content-type", b"application/cloudevents+json; charset=UTF-8"),
               ("ce-id", f"evt_{i:026d}".encode()), ("ce-type", b"bench.thing.happened"),
               ("ce-source", b"bench"), ("ce-specversion", b"1.0"),
               ("ce-time", b"2025-10-18T12:14:56.789Z"), ("ce-datacontenttype", b"application/json")]
    records.append((f"E-{i % 500}".encode(), value, headers))

failed = []


def on_delivery(err, _msg):
    if err is not None:
        failed.append(err)


def broker_cpu_seconds():
    """CPU time of the broker's threads so far, or None."""
    pid = os.environ.get("MES_BENCH_BROKER_PID")
    if not pid:
        return None
    total = 0
    for stat in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(stat) as f:
            total += int(f.read().split()[0])
    return total / 1e9


cpu_before, broker_before = time.process_time(), broker_cpu_seconds()
started = time.perf_counter()
for key, value, headers in records:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.01)
    producer.poll(0)
remaining = producer.flush(120)
elapsed = time.perf_counter() - started
cpu, broker_after = time.process_time() - cpu_before, broker_cpu_seconds()
if remaining or failed:
    raise SystemExit(f"confluent-kafka: {remaining} undelivered, {len(failed)} failed: {failed[:3]}")
print(f"RESULT {name} {count / elapsed:.0f}")
print(f"CPU {name} {cpu * 1e6 / count:.2f}")
if broker_before is not None:
    print(f"CPU broker_{name} {(broker_after - broker_before) * 1e6 / count:.2f}")
