//! `mes topics`: topics, partitions and offsets.

use mes_kafka::{KafkaClient, OffsetSpec};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::connect;
use crate::error::Error;
use crate::output::{Output, table};

/// The topics of the MES fleet: `mes.{domain}.events` (see
/// `mes_events_types::topic_for_type`) and their `.dlq` topics.
const MES_TOPIC_PREFIX: &str = "mes.";

pub(crate) async fn run(prefix: Option<&str>, all: bool, global: &Global, out: &Output) -> Result<(), Error> {
    let client = connect::kafka(global).await?;
    let topics = client
        .list_topics()
        .await
        .map_err(Error::kafka("list the topics"))?;
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    for (topic, partitions) in topics {
        if (!all && !topic.starts_with(MES_TOPIC_PREFIX)) || prefix.is_some_and(|p| !topic.starts_with(p)) {
            continue;
        }
        let mut offsets = Vec::new();
        let mut records = 0;
        for partition in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
            let (start, end) = bounds(&client, &topic, partition).await?;
            records += end - start;
            offsets.push(json!({"partition": partition, "start": start, "end": end}));
        }
        rows.push(vec![
            topic.clone(),
            partitions.to_string(),
            records.to_string(),
            offsets
                .iter()
                .map(|o| format!("{}:{}", o["partition"], o["end"]))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        listed.push(json!({"topic": topic, "partitions": offsets, "records": records}));
    }
    out.result(&Value::Array(listed), || {
        if rows.is_empty() {
            return vec![match (prefix, all) {
                (Some(prefix), _) => format!("no topic starting with {prefix}"),
                (None, true) => "no topic".to_owned(),
                (None, false) => "no MES topic (mes.*); --all lists every topic".to_owned(),
            }];
        }
        table(
            &["TOPIC", "PARTITIONS", "RECORDS", "END OFFSETS (partition:end)"],
            &rows,
        )
    })
}

/// A partition's first offset and the offset its next record will get.
pub(crate) async fn bounds(client: &KafkaClient, topic: &str, partition: i32) -> Result<(i64, i64), Error> {
    let what = || format!("offsets of {topic}/{partition}");
    let start = client
        .list_offset(topic, partition, OffsetSpec::Earliest)
        .await
        .map_err(Error::kafka(what()))?;
    let end = client
        .list_offset(topic, partition, OffsetSpec::Latest)
        .await
        .map_err(Error::kafka(what()))?;
    Ok((start, end))
}

/// A topic's partitions; an unknown topic is [`Error::NotFound`].
pub(crate) async fn partitions(client: &KafkaClient, topic: &str) -> Result<Vec<i32>, Error> {
    match client.topic(topic).await {
        Ok(metadata) => Ok(metadata.partitions.iter().map(|p| p.partition).collect()),
        Err(mes_kafka::Error::UnknownTopic { .. }) => Err(Error::NotFound(format!(
            "no topic {topic:?} on the cluster (`mes topics` lists them)"
        ))),
        Err(error) => Err(Error::kafka(format!("metadata of {topic}"))(error)),
    }
}
