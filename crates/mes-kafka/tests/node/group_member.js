// A kafkajs 2 member of a consumer group, driven by a test: it joins GROUP
// subscribed to TOPIC with kafkajs's defaults (RoundRobinAssigner), prints
// `ASSIGNED {"memberId":..,"leaderId":..,"protocol":..,"partitions":[..]}`
// after every join, and leaves the group (disconnect) when its stdin closes.
//
// Usage: NODE_PATH=<node_modules with kafkajs> node group_member.js BROKERS GROUP TOPIC
const { Kafka, logLevel } = require('kafkajs')

const [brokers, group, topic] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'mes-test-kafkajs',
  brokers: brokers.split(','),
  logLevel: logLevel.NOTHING,
})
const consumer = kafka.consumer({
  groupId: group,
  sessionTimeout: 10000,
  rebalanceTimeout: 10000,
  heartbeatInterval: 300,
})

consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
  const partitions = (payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b)
  console.log(
    'ASSIGNED ' +
      JSON.stringify({
        memberId: payload.memberId,
        leaderId: payload.leaderId,
        protocol: payload.groupProtocol,
        partitions,
      })
  )
})

const main = async () => {
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({ eachMessage: async () => {} })
}

process.stdin.on('end', async () => {
  await consumer.disconnect()
  process.exit(0)
})
process.stdin.resume()
main().catch(error => {
  console.error(error)
  process.exit(1)
})
