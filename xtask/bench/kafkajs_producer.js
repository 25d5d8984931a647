// Reference producer for `cargo xtask bench`: kafkajs 2, what the legacy
// TypeScript services use, with its default (Java-compatible murmur2)
// partitioner and acks all, sending batches of 500 records.
//
// Usage: node kafkajs_producer.js BROKERS TOPIC EVENTS
// Prints `RESULT kafkajs <events/s>`.
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [brokers, topic, countText] = process.argv.slice(2);
  const count = Number(countText);
  const kafka = new Kafka({ clientId: "bench", brokers: brokers.split(","), logLevel: logLevel.ERROR });
  const producer = kafka.producer();
  await producer.connect();
  const pad = "x".repeat(640);
  const messages = [];
  for (let i = 0; i < count; i++) {
    const id = `evt_${String(i).padStart(26, "0")}`;
    messages.push({
      key: `E-${i % 500}`,
      value: JSON.stringify({
        specversion: "1.0", type: "bench.thing.happened", source: "bench", id,
        time: "2025-10-18T12:14:56.789Z", datacontenttype: "application/json",
        entityid: `E-${i % 500}`, data: { seq: i, pad },
      }),
      headers: {
        "content-type": "application/cloudevents+json; charset=UTF-8", "ce-id": id,
        "ce-type": "bench.thing.happened", "ce-source": "bench", "ce-specversion": "1.0",
        "ce-time": "2025-10-18T12:14:56.789Z", "ce-datacontenttype": "application/json",
      },
    });
  }
  const started = process.hrtime.bigint();
  const inFlight = [];
  for (let i = 0; i < count; i += 500) {
    inFlight.push(producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) }));
  }
  await Promise.all(inFlight);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await producer.disconnect();
  console.log(`RESULT kafkajs ${Math.round(count / seconds)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
