"""Reads a topic with another client library (confluent-kafka, librdkafka)
and decodes each record with the Python CloudEvents SDK's Kafka binding.

Usage: consume_confluent.py BROKERS TOPIC PARTITIONS EXPECTED
Prints a JSON list: partition, offset, key, headers, and the decoded event.
"""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat

brokers, topic, partitions, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": "mes-interop-" + topic,
    "enable.auto.commit": False,
    "api.version.request": True,
})
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

out = []
deadline = time.monotonic() + 60
while len(out) < expected and time.monotonic() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        raise SystemExit(f"consumer error: {msg.error()}")
    headers = {k: v for k, v in (msg.headers() or [])}
    event = kafka.from_kafka(
        kafka.KafkaMessage(headers=headers, key=msg.key(), value=msg.value()), JSONFormat()
    )
    attributes = dict(event.get_attributes())
    attributes["time"] = attributes["time"].isoformat()
    out.append({
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": msg.key().decode("utf-8") if msg.key() is not None else None,
        "headers": {k: v.decode("utf-8") for k, v in headers.items()},
        "attributes": attributes,
        "data": event.get_data(),
    })
consumer.close()
json.dump(out, sys.stdout)
