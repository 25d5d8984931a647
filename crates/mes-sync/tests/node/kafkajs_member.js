// A kafkajs 2 instance of a TypeScript service in a consumer group, driven by
// a test: it joins GROUP subscribed to TOPIC with kafkajs's defaults
// (RoundRobinAssigner, auto-commit after each batch), prints
// `ASSIGNED {"memberId":..,"partitions":[..]}` after every join and
// `HANDLED <event id>` for every record it processed, and leaves the group
// (committing what it processed) when its stdin closes, then prints STOPPED.
//
// Usage: NODE_PATH=<node_modules with kafkajs> node kafkajs_member.js BROKERS GROUP TOPIC SESSION_MS
const { Kafka, logLevel } = require('kafkajs')

const [brokers, group, topic, sessionMs] = process.argv.slice(2)
const session = Number(sessionMs)
// KAFKAJS_DEBUG=1 traces kafkajs's requests on stderr.
const toStderr = () => ({ namespace, level, label, log }) =>
  console.error(`kafkajs ${label} ${namespace} ${JSON.stringify(log)}`)
const kafka = new Kafka({
  clientId: 'mes-test-kafkajs',
  brokers: brokers.split(','),
  logLevel: process.env.KAFKAJS_DEBUG ? logLevel.DEBUG : logLevel.NOTHING,
  logCreator: toStderr,
})
const consumer = kafka.consumer({
  groupId: group,
  sessionTimeout: session,
  rebalanceTimeout: session,
  heartbeatInterval: Math.max(100, Math.floor(session / 10)),
  maxWaitTimeInMs: 100,
})

consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
  const partitions = (payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b)
  console.log('ASSIGNED ' + JSON.stringify({ memberId: payload.memberId, partitions }))
})

const main = async () => {
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ message }) => {
      // Structured CloudEvents and legacy records both carry `id` on top.
      const event = JSON.parse(message.value.toString())
      console.log('HANDLED ' + event.id)
    },
  })
}

process.stdin.on('end', async () => {
  await consumer.disconnect()
  console.log('STOPPED')
  process.exit(0)
})
process.stdin.resume()
main().catch(error => {
  console.error(error)
  process.exit(1)
})
