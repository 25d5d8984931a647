"""Decodes Kafka records with the independent Python CloudEvents SDK.

Reads a JSON list of records ({"key": hex|null, "headers": [[name, hex]...],
"value": hex}) on stdin; writes a JSON list of what the SDK's Kafka binding
(cloudevents.core.bindings.kafka.from_kafka) makes of each: its attributes
(time as RFC 3339), its data, and which mode it detected.
"""

import json
import sys

from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat


def decode(record):
    headers = {name: bytes.fromhex(value) for name, value in record["headers"]}
    key = bytes.fromhex(record["key"]) if record["key"] is not None else None
    message = kafka.KafkaMessage(headers=headers, key=key, value=bytes.fromhex(record["value"]))
    binary = any(name.lower().startswith("ce_") for name in headers)
    event = kafka.from_kafka(message, JSONFormat())
    attributes = dict(event.get_attributes())
    attributes["time"] = attributes["time"].isoformat()
    return {
        "mode": "binary" if binary else "structured",
        "attributes": attributes,
        "data": event.get_data(),
    }


json.dump([decode(r) for r in json.load(sys.stdin)], sys.stdout)
