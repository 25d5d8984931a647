// Reference consumer for `cargo xtask bench`: a kafkajs 2 consumer in a
// group of its own reading a whole topic from the start, doing nothing with
// the records (auto-commit as kafkajs defaults), with eachMessage or
// eachBatch: what the TypeScript services run today.
//
// Usage: node kafkajs_consumer.js BROKERS TOPIC COUNT each-message|each-batch
// Prints `RESULT kafkajs_consumer_each_message <events/s>` (or each_batch),
// timed from the first record to the COUNT-th.
const { Kafka, logLevel } = require('kafkajs')

const [brokers, topic, countArg, mode] = process.argv.slice(2)
const count = Number(countArg)
const kafka = new Kafka({ clientId: 'mes-bench', brokers: brokers.split(','), logLevel: logLevel.NOTHING })
const consumer = kafka.consumer({ groupId: `mes-bench-kafkajs-${mode}-${Date.now()}`, maxWaitTimeInMs: 500 })

let read = 0
let started = null
const done = new Promise(resolve => {
  const seen = n => {
    if (started === null) started = process.hrtime.bigint()
    read += n
    if (read >= count) resolve(process.hrtime.bigint())
  }
  const handler =
    mode === 'each-batch'
      ? { eachBatch: async ({ batch }) => seen(batch.messages.length) }
      : { eachMessage: async () => seen(1) }
  consumer
    .connect()
    .then(() => consumer.subscribe({ topics: [topic], fromBeginning: true }))
    .then(() => consumer.run(handler))
})

const timeout = setTimeout(() => {
  console.error(`kafkajs consumer: ${read} of ${count} after 300 s`)
  process.exit(1)
}, 300000)

done.then(async finished => {
  clearTimeout(timeout)
  const seconds = Number(finished - started) / 1e9
  console.log(`RESULT kafkajs_consumer_${mode.replace('-', '_')} ${(count / seconds).toFixed(0)}`)
  await consumer.disconnect()
  process.exit(0)
})
