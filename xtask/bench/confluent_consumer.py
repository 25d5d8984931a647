"""Reference consumer for `cargo xtask bench`: librdkafka's consumer
(confluent-kafka) reading a whole topic from the start, no commits, doing
nothing with the records: the baseline of mes-kafka's raw fetch.

Usage: confluent_consumer.py BROKERS TOPIC
Prints `RESULT confluent_kafka_consumer <events/s>`.
"""

import sys
import time

from confluent_kafka import Consumer, TopicPartition

brokers, topic = sys.argv[1], sys.argv[2]
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": f"mes-bench-{time.time_ns()}",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 500,
})
partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
# Until every partition reaches the high watermark its fetches report
# (tansu's memory engine answers ListOffsets(latest) wrongly after a batch).
position = {p: 0 for p in partitions}
read = 0
started = time.perf_counter()
while True:
    for message in consumer.consume(num_messages=1000, timeout=5):
        if message.error() is None:
            read += 1
            position[message.partition()] = message.offset() + 1
    highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1] for p in partitions}
    if all(high >= 0 and position[p] >= high for p, high in highs.items()):
        break
    if time.perf_counter() - started > 300:
        raise SystemExit(f"confluent consumer: still short of the end after 300 s: {position} of {highs}")
elapsed = time.perf_counter() - started
consumer.close()
print(f"RESULT confluent_kafka_consumer {read / elapsed:.0f}")
