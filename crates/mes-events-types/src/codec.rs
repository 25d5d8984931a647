//! The codec between a [`DomainEvent`] and a Kafka record.
//!
//! Three record formats exist on the fleet's topics:
//!
//! | format | how it is recognised | value |
//! |---|---|---|
//! | [structured](RecordFormat::Structured) (CloudEvents Kafka binding) | `content-type: application/cloudevents+json` | the whole event as JSON |
//! | [binary](RecordFormat::Binary) (CloudEvents Kafka binding) | `ce_*` headers | the data alone; `content-type` is its type |
//! | [legacy](RecordFormat::Legacy) (TypeScript services) | neither, but the value is a JSON object with `specversion` | the whole event as JSON; `ce-*` headers |
//!
//! [`encode`] writes structured (default) or binary records, optionally with
//! the legacy `ce-*` headers (on by default, so legacy tooling that reads
//! headers keeps working; legacy consumers read the structured value).
//! [`decode`] reads all three.
//!
//! Envelope fields the CloudEvents core does not have travel as extension
//! attributes: `entityid`, `entitytype`, `correlationid`, `causationid`, and
//! `metadata` (a JSON object in structured mode, like the legacy services
//! write it; a JSON string in the `ce_metadata` header in binary mode, since
//! header values are strings). Other extension attributes are ignored.
//!
//! When a record carries no `entityid`, the record key is the entity id
//! unless it equals the event id (the legacy services key events without an
//! entity by their id). Correlation and causation ids missing from the event
//! are read from the legacy `ce-correlationid` and `ce-causationid` headers.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{EnvelopeParts, EventId};
use crate::payload::EventPayload;
use crate::{DomainEvent, Error, EventMetadata, EventType, Timestamp};

/// The only CloudEvents version this crate reads and writes.
pub const SPEC_VERSION: &str = "1.0";
/// `content-type` of a structured-mode record.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";
/// Content type of the data of every event.
pub const DATA_CONTENT_TYPE: &str = "application/json";

const CONTENT_TYPE: &str = "content-type";
const BINARY_PREFIX: &str = "ce_";
const LEGACY_PREFIX: &str = "ce-";

/// A Kafka record as the codec sees it, independent of any client library.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaRecord {
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The headers in order. Kafka allows a name twice; the decoder rejects a
    /// header it reads that is given twice with different values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record value.
    pub value: Option<Vec<u8>>,
}

impl KafkaRecord {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The one value of header `name`, as UTF-8; an error if it is not UTF-8
    /// or appears twice with different values.
    fn unique_header(&self, name: &str) -> Result<Option<&str>, Error> {
        let mut found: Option<&[u8]> = None;
        for (n, v) in &self.headers {
            if !n.eq_ignore_ascii_case(name) {
                continue;
            }
            match found {
                Some(previous) if previous != v.as_slice() => {
                    return Err(Error::InvalidHeader {
                        name: name.to_owned(),
                        reason: "given twice with different values",
                    });
                }
                _ => found = Some(v),
            }
        }
        found
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| Error::InvalidHeader {
                    name: name.to_owned(),
                    reason: "not UTF-8",
                })
            })
            .transpose()
    }
}

/// The content mode [`encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ContentMode {
    /// The whole event as JSON in the value (the default; what the legacy
    /// consumers read too).
    #[default]
    Structured,
    /// The data alone in the value, attributes in `ce_*` headers.
    ///
    /// **The TypeScript consumers of the fleet cannot read it**: they parse
    /// the value as the whole event and find no `id`, `type` or `data` in
    /// it. Use binary mode only on topics that no legacy consumer reads (the
    /// Rust consumer reads both).
    Binary,
}

/// How [`encode`] writes a record.
///
/// ```
/// use mes_events_types::{ContentMode, EncodeOptions};
///
/// let options = EncodeOptions::default().mode(ContentMode::Binary).legacy_headers(false);
/// assert_eq!(options.content_mode(), ContentMode::Binary);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    mode: ContentMode,
    legacy_headers: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            mode: ContentMode::Structured,
            legacy_headers: true,
        }
    }
}

impl EncodeOptions {
    /// Sets the content mode.
    #[must_use]
    pub fn mode(mut self, mode: ContentMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether to add the legacy `ce-*` headers (default: yes).
    #[must_use]
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }

    /// The content mode.
    pub fn content_mode(&self) -> ContentMode {
        self.mode
    }

    /// Whether the legacy `ce-*` headers are added.
    pub fn writes_legacy_headers(&self) -> bool {
        self.legacy_headers
    }
}

/// The format of a record on the wire, as [`detect_format`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordFormat {
    /// CloudEvents structured mode.
    Structured,
    /// CloudEvents binary mode.
    Binary,
    /// What the TypeScript services write.
    Legacy,
}

#[derive(Serialize)]
struct StructuredEvent<'a, T> {
    specversion: &'static str,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    id: &'a str,
    time: &'a str,
    datacontenttype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entityid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entitytype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    data: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a EventMetadata>,
}

/// Encodes an event as a Kafka record. The key is the event's
/// [`partition_key`](DomainEvent::partition_key); the topic comes from
/// [`DomainEvent::topic`].
///
/// ```
/// use mes_events_types::{decode, encode, DomainEvent, EncodeOptions, EventType};
///
/// let event = DomainEvent::new_raw(
///     EventType::parse("maintenance.tool.calibrated").unwrap(),
///     "maintenance-service",
///     serde_json::json!({"toolId": "T-77"}),
/// )
/// .with_entity_id("T-77");
/// let record = encode(&event, &EncodeOptions::default()).unwrap();
/// assert_eq!(record.key.as_deref(), Some(&b"T-77"[..]));
/// assert_eq!(decode(&record).unwrap(), event);
/// ```
pub fn encode<T: Serialize>(event: &DomainEvent<T>, options: &EncodeOptions) -> Result<KafkaRecord, Error> {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(16);
    // Sized for a typical event up front: growing from serde_json's default
    // takes several copies per event.
    let mut value = Vec::with_capacity(1024);
    encode_parts(event, options, &mut value, |name, value| {
        headers.push((name.to_owned(), value.as_bytes().to_vec()));
    })?;
    Ok(KafkaRecord {
        key: Some(event.partition_key().as_bytes().to_vec()),
        headers,
        value: Some(value),
    })
}

/// [`encode`] without building a [`KafkaRecord`], for producers that build
/// their client library's record type themselves: appends the record value
/// to `value` and hands every header to `header`, in the order `encode`
/// writes them. The record key is the event's
/// [`partition_key`](DomainEvent::partition_key).
///
/// Writes exactly what [`encode`] writes (`encode` is built on it) and
/// allocates nothing but what `value` and the caller's `header` need.
///
/// ```
/// use mes_events_types::{encode, encode_parts, DomainEvent, EncodeOptions, EventType};
///
/// let event = DomainEvent::new_raw(
///     EventType::parse("maintenance.tool.calibrated").unwrap(),
///     "maintenance-service",
///     serde_json::json!({"toolId": "T-77"}),
/// );
/// let mut value = Vec::new();
/// let mut headers = Vec::new();
/// encode_parts(&event, &EncodeOptions::default(), &mut value, |name, v| {
///     headers.push((name.to_owned(), v.as_bytes().to_vec()))
/// })
/// .unwrap();
/// let record = encode(&event, &EncodeOptions::default()).unwrap();
/// assert_eq!(record.value, Some(value));
/// assert_eq!(record.headers, headers);
/// ```
pub fn encode_parts<T: Serialize>(
    event: &DomainEvent<T>,
    options: &EncodeOptions,
    value: &mut Vec<u8>,
    mut header: impl FnMut(&'static str, &str),
) -> Result<(), Error> {
    let serialize_error = |source| Error::Serialize {
        event_type: event.event_type().clone(),
        source,
    };
    let mut time = TimeText::default();
    time.write(event.time());
    let time = time.as_str();
    match options.mode {
        ContentMode::Structured => {
            header(CONTENT_TYPE, STRUCTURED_CONTENT_TYPE);
            let structured = StructuredEvent {
                specversion: SPEC_VERSION,
                event_type: event.event_type().as_str(),
                source: event.source(),
                id: event.id().as_str(),
                time,
                datacontenttype: DATA_CONTENT_TYPE,
                subject: event.subject(),
                entityid: event.entity_id(),
                entitytype: event.entity_type(),
                correlationid: event.correlation_id(),
                causationid: event.causation_id(),
                data: event.data(),
                metadata: event.metadata(),
            };
            serde_json::to_writer(&mut *value, &structured).map_err(serialize_error)?;
        }
        ContentMode::Binary => {
            header(CONTENT_TYPE, DATA_CONTENT_TYPE);
            let metadata = event
                .metadata()
                .map(serde_json::to_string)
                .transpose()
                .map_err(serialize_error)?;
            let attributes = [
                ("ce_specversion", Some(SPEC_VERSION)),
                ("ce_id", Some(event.id().as_str())),
                ("ce_source", Some(event.source())),
                ("ce_type", Some(event.event_type().as_str())),
                ("ce_time", Some(time)),
                ("ce_subject", event.subject()),
                ("ce_entityid", event.entity_id()),
                ("ce_entitytype", event.entity_type()),
                ("ce_correlationid", event.correlation_id()),
                ("ce_causationid", event.causation_id()),
                ("ce_metadata", metadata.as_deref()),
            ];
            for (name, value) in attributes {
                if let Some(value) = value {
                    header(name, value);
                }
            }
            serde_json::to_writer(&mut *value, event.data()).map_err(serialize_error)?;
        }
    }
    if options.legacy_headers {
        let legacy = [
            ("ce-specversion", Some(SPEC_VERSION)),
            ("ce-type", Some(event.event_type().as_str())),
            ("ce-source", Some(event.source())),
            ("ce-id", Some(event.id().as_str())),
            ("ce-time", Some(time)),
            ("ce-datacontenttype", Some(DATA_CONTENT_TYPE)),
            ("ce-correlationid", event.correlation_id()),
            ("ce-causationid", event.causation_id()),
        ];
        for (name, value) in legacy {
            if let Some(value) = value {
                header(name, value);
            }
        }
    }
    Ok(())
}

/// A timestamp's text on the stack: the longest RFC 3339 UTC time
/// (`9999-12-31T23:59:59.999999999Z`) has 30 characters.
#[derive(Default)]
struct TimeText {
    bytes: [u8; 32],
    len: usize,
}

impl TimeText {
    fn write(&mut self, time: Timestamp) {
        use std::fmt::Write as _;
        // Only fails if the text does not fit, which `Timestamp` rules out.
        let _ = write!(self, "{time}");
    }

    fn as_str(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl std::fmt::Write for TimeText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let target = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        target.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Finds which of the three formats a record is in, without decoding it.
pub fn detect_format(record: &KafkaRecord) -> Result<RecordFormat, Error> {
    if let Some(content_type) = record.unique_header(CONTENT_TYPE)?
        && is_cloudevents_content_type(content_type)
    {
        return Ok(RecordFormat::Structured);
    }
    if has_binary_headers(record) {
        return Ok(RecordFormat::Binary);
    }
    legacy_object(record).map(|_| RecordFormat::Legacy)
}

/// Decodes a record in any of the three formats into an event with raw JSON
/// data. Never panics, whatever the bytes.
pub fn decode(record: &KafkaRecord) -> Result<DomainEvent<Value>, Error> {
    let content_type = record.unique_header(CONTENT_TYPE)?;
    let (attributes, data) = match content_type {
        Some(ct) if is_cloudevents_content_type(ct) => {
            if media_type(ct) != "application/cloudevents+json" {
                return Err(Error::UnsupportedContentType {
                    content_type: ct.to_owned(),
                });
            }
            let value = record.value.as_deref().ok_or(Error::NotACloudEvent {
                reason: "structured record has no value",
            })?;
            let object = match parse_json(value, "structured event")? {
                Value::Object(object) => object,
                _ => {
                    return Err(Error::NotACloudEvent {
                        reason: "structured record value is not a JSON object",
                    });
                }
            };
            from_json_object(object)?
        }
        _ if has_binary_headers(record) => from_binary(record, content_type)?,
        _ => from_json_object(legacy_object(record)?)?,
    };
    let parts = attributes.into_parts(record)?;
    Ok(DomainEvent::from_parts(parts, data))
}

/// Decodes a record and takes its typed view in one step
/// ([`decode`] then [`DomainEvent::into_typed`]).
pub fn decode_typed<T: EventPayload>(record: &KafkaRecord) -> Result<DomainEvent<T>, Error> {
    decode(record)?.into_typed()
}

fn is_cloudevents_content_type(content_type: &str) -> bool {
    content_type
        .get(..23)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/cloudevents"))
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(content_type: &str) -> bool {
    let media = media_type(content_type);
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

fn has_binary_headers(record: &KafkaRecord) -> bool {
    record.headers.iter().any(|(name, _)| {
        name.get(..BINARY_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(BINARY_PREFIX))
    })
}

fn parse_json(bytes: &[u8], what: &'static str) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what, source })
}

fn legacy_object(record: &KafkaRecord) -> Result<Map<String, Value>, Error> {
    let value = record.value.as_deref().ok_or(Error::NotACloudEvent {
        reason: "no content-type, no ce_ headers and no value",
    })?;
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(object)) if object.contains_key("specversion") => Ok(object),
        _ => Err(Error::NotACloudEvent {
            reason: "no content-type, no ce_ headers, and the value is not a JSON event",
        }),
    }
}

/// The attributes of an event as read from the wire, before validation.
#[derive(Default)]
struct WireAttributes {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    event_type: Option<String>,
    time: Option<String>,
    datacontenttype: Option<String>,
    subject: Option<String>,
    entityid: Option<String>,
    entitytype: Option<String>,
    correlationid: Option<String>,
    causationid: Option<String>,
    metadata: Option<Value>,
}

fn from_json_object(mut object: Map<String, Value>) -> Result<(WireAttributes, Value), Error> {
    if object.contains_key("data_base64") {
        return Err(Error::UnsupportedContentType {
            content_type: "base64 data (data_base64)".to_owned(),
        });
    }
    fn take(object: &mut Map<String, Value>, name: &'static str) -> Result<Option<String>, Error> {
        match object.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::InvalidAttribute {
                name,
                reason: "must be a string".to_owned(),
            }),
        }
    }
    let o = &mut object;
    let attributes = WireAttributes {
        specversion: take(o, "specversion")?,
        id: take(o, "id")?,
        source: take(o, "source")?,
        event_type: take(o, "type")?,
        time: take(o, "time")?,
        datacontenttype: take(o, "datacontenttype")?,
        subject: take(o, "subject")?,
        entityid: take(o, "entityid")?,
        entitytype: take(o, "entitytype")?,
        correlationid: take(o, "correlationid")?,
        causationid: take(o, "causationid")?,
        metadata: o.remove("metadata"),
    };
    let data = object.remove("data").unwrap_or(Value::Null);
    Ok((attributes, data))
}

fn from_binary(record: &KafkaRecord, content_type: Option<&str>) -> Result<(WireAttributes, Value), Error> {
    let header = |name: &str| -> Result<Option<String>, Error> {
        Ok(record
            .unique_header(&format!("{BINARY_PREFIX}{name}"))?
            .map(str::to_owned))
    };
    let metadata = match header("metadata")? {
        None => None,
        Some(text) => Some(parse_json(text.as_bytes(), "ce_metadata header")?),
    };
    let attributes = WireAttributes {
        specversion: header("specversion")?,
        id: header("id")?,
        source: header("source")?,
        event_type: header("type")?,
        time: header("time")?,
        datacontenttype: content_type.map(str::to_owned),
        subject: header("subject")?,
        entityid: header("entityid")?,
        entitytype: header("entitytype")?,
        correlationid: header("correlationid")?,
        causationid: header("causationid")?,
        metadata,
    };
    if let Some(ct) = content_type
        && !is_json_media_type(ct)
    {
        return Err(Error::UnsupportedContentType {
            content_type: ct.to_owned(),
        });
    }
    let data = match record.value.as_deref() {
        None => Value::Null,
        Some(bytes) => parse_json(bytes, "record value")?,
    };
    Ok((attributes, data))
}

impl WireAttributes {
    fn into_parts(self, record: &KafkaRecord) -> Result<EnvelopeParts, Error> {
        let specversion = self
            .specversion
            .ok_or(Error::MissingAttribute { name: "specversion" })?;
        if specversion != SPEC_VERSION {
            return Err(Error::UnsupportedSpecVersion { found: specversion });
        }
        if let Some(ct) = self.datacontenttype.as_deref()
            && !is_json_media_type(ct)
        {
            return Err(Error::UnsupportedContentType {
                content_type: ct.to_owned(),
            });
        }
        let id = EventId::parse(self.id.ok_or(Error::MissingAttribute { name: "id" })?)?;
        let source = self.source.ok_or(Error::MissingAttribute { name: "source" })?;
        if source.is_empty() {
            return Err(Error::InvalidAttribute {
                name: "source",
                reason: "must not be empty".to_owned(),
            });
        }
        let event_type = EventType::parse(&self.event_type.ok_or(Error::MissingAttribute { name: "type" })?)?;
        let time = Timestamp::parse(&self.time.ok_or(Error::MissingAttribute { name: "time" })?)?;
        let entity_id = match self.entityid {
            Some(entity_id) => Some(entity_id),
            None => match record.key.as_deref() {
                None => None,
                Some(key) => {
                    let key = std::str::from_utf8(key).map_err(|_| Error::InvalidKey)?;
                    (key != id.as_str() && !key.is_empty()).then(|| key.to_owned())
                }
            },
        };
        let legacy = |name: &str| -> Result<Option<String>, Error> {
            Ok(record
                .unique_header(&format!("{LEGACY_PREFIX}{name}"))?
                .map(str::to_owned))
        };
        let correlation_id = match self.correlationid {
            Some(value) => Some(value),
            None => legacy("correlationid")?,
        };
        let causation_id = match self.causationid {
            Some(value) => Some(value),
            None => legacy("causationid")?,
        };
        let metadata = match self.metadata {
            None | Some(Value::Null) => None,
            // Some CloudEvents SDKs stringify object-valued extensions.
            Some(Value::String(text)) => Some(metadata_from(parse_json(text.as_bytes(), "metadata")?)?),
            Some(value) => Some(metadata_from(value)?),
        };
        Ok(EnvelopeParts {
            id,
            event_type,
            source,
            time,
            subject: self.subject,
            entity_id,
            entity_type: self.entitytype,
            correlation_id,
            causation_id,
            metadata,
        })
    }
}

fn metadata_from(value: Value) -> Result<EventMetadata, Error> {
    if !value.is_object() {
        return Err(Error::InvalidAttribute {
            name: "metadata",
            reason: "must be a JSON object".to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::InvalidAttribute {
        name: "metadata",
        reason: e.to_string(),
    })
}
