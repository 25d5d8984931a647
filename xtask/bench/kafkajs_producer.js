// Reference producer for `cargo xtask bench`: kafkajs 2, what the legacy
// TypeScript services use, with its default (Java-compatible murmur2)
// partitioner and acks all, sending batches of 500 records.
//
// Usage: node kafkajs_producer.js BROKERS TOPIC EVENTS
// Prints `RESULT kafkajs <events/s>`, `CPU kafkajs <µs per event>` and, with
// MES_BENCH_BROKER_PID, the broker's `CPU broker_kafkajs` meanwhile.
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");

// CPU seconds of the broker's threads so far, or null.
function brokerCpuSeconds() {
  const pid = process.env.MES_BENCH_BROKER_PID;
  if (!pid) return null;
  let total = 0;
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    total += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
  }
  return total / 1e9;
}

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
  const cpuBefore = process.cpuUsage();
  const brokerBefore = brokerCpuSeconds();
  const started = process.hrtime.bigint();
  const inFlight = [];
  for (let i = 0; i < count; i += 500) {
    inFlight.push(producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) }));
  }
  await Promise.all(inFlight);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  const brokerAfter = brokerCpuSeconds();
  await producer.disconnect();
  console.log(`RESULT kafkajs ${Math.round(count / seconds)}`);
  console.log(`CPU kafkajs ${((cpu.user + cpu.system) / count).toFixed(2)}`);
  if (brokerBefore !== null) {
    console.log(`CPU broker_kafkajs ${(((brokerAfter - brokerBefore) * 1e6) / count).toFixed(2)}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
