//! A scripted broker: real loopback TCP (or an in-memory pipe) speaking
//! just enough Kafka to exercise the client unchanged. It records every
//! request and answers as the test's script says, with sensible defaults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mes_kafka::BrokerStream;
use mes_kafka::protocol::record_batch::{Compression, ProducerStamp, Record, write_record_batch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const LIST_OFFSETS: i16 = 2;
pub const METADATA: i16 = 3;
pub const API_VERSIONS: i16 = 18;
pub const INIT_PRODUCER_ID: i16 = 22;

/// One request as the broker read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which connection (0, 1, ... in the order they were opened).
    pub conn: usize,
    pub api_key: i16,
    pub version: i16,
    pub correlation: i32,
    /// The body, after the request header (and its tagged fields).
    pub body: Vec<u8>,
    /// The frame's size prefix, and the bytes that followed it.
    pub size: usize,
    pub framed: usize,
    /// How many socket reads carried the frame (1: it arrived whole).
    pub pieces: usize,
    /// How many requests of this API the broker got before this one.
    pub nth: usize,
    /// The broker's port.
    pub port: u16,
}

/// What the broker does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// The default answer.
    Default,
    /// This body (after the correlation id).
    Answer(Vec<u8>),
    /// Keep the default answer, to be written by a later `Release`.
    Hold,
    /// The default answer, then the held ones, last held first.
    Release,
    /// Close the connection without answering.
    Close,
    /// Never answer; keep reading.
    Silence,
    /// These bytes as they are, then keep reading.
    Raw(Vec<u8>),
    /// The first `n` bytes of the default answer's frame, then close.
    Cut(usize),
}

type Script = dyn Fn(&Request) -> Action + Send + Sync;

struct State {
    requests: Vec<Request>,
    connections: usize,
    closed: usize,
    /// Log end offset per (topic, partition).
    logs: HashMap<(String, i32), i64>,
}

pub struct Broker {
    pub port: u16,
    versions: Vec<(i16, i16, i16)>,
    script: Box<Script>,
    state: Mutex<State>,
    changed: Notify,
}

/// The APIs and versions this crate speaks.
pub fn our_versions() -> Vec<(i16, i16, i16)> {
    use mes_kafka::protocol::{
        api_versions, create_topics, fetch, init_producer_id, list_offsets, metadata, produce,
    };
    fn entry<R: mes_kafka::protocol::Request>() -> (i16, i16, i16) {
        (R::API_KEY, *R::VERSIONS.start(), *R::VERSIONS.end())
    }
    vec![
        entry::<produce::ProduceRequest<'_>>(),
        entry::<fetch::FetchRequest>(),
        entry::<list_offsets::ListOffsetsRequest>(),
        entry::<metadata::MetadataRequest>(),
        entry::<api_versions::ApiVersionsRequest>(),
        entry::<create_topics::CreateTopicsRequest>(),
        entry::<init_producer_id::InitProducerIdRequest>(),
    ]
}

impl Broker {
    /// A broker on 127.0.0.1, speaking what this crate speaks.
    pub async fn start(script: impl Fn(&Request) -> Action + Send + Sync + 'static) -> Arc<Self> {
        Self::start_with(our_versions(), script).await
    }

    /// A broker whose ApiVersions answer lists `versions` (key, min, max).
    pub async fn start_with(
        versions: Vec<(i16, i16, i16)>,
        script: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker = Arc::new(Self {
            port: listener.local_addr().unwrap().port(),
            versions,
            script: Box::new(script),
            state: Mutex::new(State {
                requests: Vec::new(),
                connections: 0,
                closed: 0,
                logs: HashMap::new(),
            }),
            changed: Notify::new(),
        });
        let accepting = Arc::clone(&broker);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                accepting.serve(stream);
            }
        });
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An in-memory connection to this broker, for `BrokerConnection::over`.
    pub fn duplex(self: &Arc<Self>) -> Box<dyn BrokerStream> {
        let (client, server) = tokio::io::duplex(1 << 20);
        self.serve(server);
        Box::new(client)
    }

    fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self: &Arc<Self>, stream: S) {
        let conn = {
            let mut state = self.state.lock().unwrap();
            state.connections += 1;
            state.connections - 1
        };
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            broker.connection(conn, stream).await;
            broker.state.lock().unwrap().closed += 1;
            broker.changed.notify_waiters();
        });
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(&self, conn: usize, mut stream: S) {
        let mut buf: Vec<u8> = Vec::new();
        let mut pieces = 0;
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut chunk = vec![0_u8; 256 * 1024];
        loop {
            // Every whole frame in the buffer, then read more.
            while buf.len() >= 4 {
                let size = usize::try_from(i32::from_be_bytes(buf[..4].try_into().unwrap())).unwrap();
                if buf.len() < 4 + size {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..4 + size).skip(4).collect();
                let request = self.record(conn, size, &frame, pieces.max(1));
                pieces = usize::from(!buf.is_empty());
                let default = || frame_of(&request, &self.default_answer(&request));
                let written = match (self.script)(&request) {
                    Action::Default => stream.write_all(&default()).await,
                    Action::Answer(body) => stream.write_all(&frame_of(&request, &body)).await,
                    Action::Hold => {
                        held.push(default());
                        Ok(())
                    }
                    Action::Release => {
                        let mut out = default();
                        for answer in held.drain(..).rev() {
                            out.extend_from_slice(&answer);
                        }
                        stream.write_all(&out).await
                    }
                    Action::Close => return,
                    Action::Silence => Ok(()),
                    Action::Raw(bytes) => stream.write_all(&bytes).await,
                    Action::Cut(n) => {
                        let _ = stream.write_all(&default()[..n]).await;
                        let _ = stream.flush().await;
                        return;
                    }
                };
                if written.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    pieces += 1;
                }
            }
        }
    }

    fn record(&self, conn: usize, size: usize, frame: &[u8], pieces: usize) -> Request {
        let mut r = Cursor(frame);
        let (api_key, version, correlation) = (r.i16(), r.i16(), r.i32());
        let _client_id = r.string();
        if api_key == INIT_PRODUCER_ID && version >= 2 {
            assert_eq!(r.bytes(1), [0], "header tagged fields");
        }
        let mut state = self.state.lock().unwrap();
        let request = Request {
            conn,
            api_key,
            version,
            correlation,
            body: r.0.to_vec(),
            size,
            framed: frame.len(),
            pieces,
            nth: state.requests.iter().filter(|q| q.api_key == api_key).count(),
            port: self.port,
        };
        state.requests.push(request.clone());
        drop(state);
        self.changed.notify_waiters();
        request
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests of one API so far.
    pub fn requests_of(&self, api_key: i16) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.api_key == api_key)
            .collect()
    }

    /// How many connections were opened, and how many have ended.
    pub fn connections(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.connections, state.closed)
    }

    /// Waits until `done` holds of the requests and connections.
    pub async fn wait_until(&self, done: impl Fn(&[Request], (usize, usize)) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.requests(), self.connections()) {
                return;
            }
            changed.await;
        }
    }

    fn default_answer(&self, r: &Request) -> Vec<u8> {
        match r.api_key {
            API_VERSIONS => api_versions_answer(&self.versions),
            METADATA => metadata_answer(r.version, r.port, &r.metadata_topics().unwrap_or_default()),
            INIT_PRODUCER_ID => init_producer_id_answer(0, 1000 + i64::try_from(r.nth).unwrap(), 0),
            PRODUCE => {
                let produce = r.produce();
                let mut state = self.state.lock().unwrap();
                let end = state
                    .logs
                    .entry((produce.topic.clone(), produce.partition))
                    .or_default();
                let base = *end;
                *end += i64::from(produce.stamp().3);
                produce_answer(r.version, &produce.topic, produce.partition, 0, base)
            }
            FETCH => {
                let (topic, partition, _) = r.fetch();
                let end = self.log_end(&topic, partition);
                fetch_answer(r.version, &topic, partition, 0, end, &[])
            }
            LIST_OFFSETS => {
                let (topic, partition, timestamp) = r.list_offsets();
                let offset = if timestamp == -2 {
                    0
                } else {
                    self.log_end(&topic, partition)
                };
                list_offsets_answer(r.version, &topic, partition, offset)
            }
            other => panic!("the scripted broker has no default answer to API {other}"),
        }
    }

    fn log_end(&self, topic: &str, partition: i32) -> i64 {
        let state = self.state.lock().unwrap();
        state
            .logs
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }
}

/// An answer frame: size, correlation id, header tagged fields (flexible
/// versions), body.
pub fn frame_of(r: &Request, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 9);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&r.correlation.to_be_bytes());
    if r.api_key == INIT_PRODUCER_ID && r.version >= 2 {
        frame.push(0);
    }
    frame.extend_from_slice(body);
    let size = i32::try_from(frame.len() - 4).unwrap();
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}

/// A big-endian reader of request bodies (test input, so it may panic).
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.bytes(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.bytes(8).try_into().unwrap())
    }
    pub fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()).ok()?;
        Some(String::from_utf8(self.bytes(len).to_vec()).unwrap())
    }
}

/// A Produce request's one partition.
pub struct Produce {
    pub topic: String,
    pub partition: i32,
    pub records: Vec<u8>,
}

impl Produce {
    /// The batch header's producer id, epoch, base sequence and record count.
    pub fn stamp(&self) -> (i64, i16, i32, i32) {
        let mut r = Cursor(&self.records[43..]);
        (r.i64(), r.i16(), r.i32(), r.i32())
    }
}

impl Request {
    pub fn metadata_topics(&self) -> Option<Vec<String>> {
        let mut r = Cursor(&self.body);
        let count = usize::try_from(r.i32()).ok()?;
        Some((0..count).map(|_| r.string().unwrap()).collect())
    }

    pub fn produce(&self) -> Produce {
        let mut r = Cursor(&self.body);
        let _transactional_id = r.string();
        let (_acks, _timeout) = (r.i16(), r.i32());
        assert_eq!(r.i32(), 1, "one topic");
        let topic = r.string().unwrap();
        assert_eq!(r.i32(), 1, "one partition");
        let partition = r.i32();
        let len = usize::try_from(r.i32()).unwrap();
        let records = r.bytes(len).to_vec();
        assert!(r.0.is_empty(), "the record set ends the body");
        Produce {
            topic,
            partition,
            records,
        }
    }

    /// A Fetch's topic, partition and offset.
    pub fn fetch(&self) -> (String, i32, i64) {
        let mut r = Cursor(&self.body[17..]);
        assert_eq!(r.i32(), 1, "one topic");
        let topic = r.string().unwrap();
        assert_eq!(r.i32(), 1, "one partition");
        (topic, r.i32(), r.i64())
    }

    /// A Fetch's max_bytes.
    pub fn fetch_max_bytes(&self) -> i32 {
        Cursor(&self.body[12..]).i32()
    }

    /// A ListOffsets request's topic, partition and timestamp.
    pub fn list_offsets(&self) -> (String, i32, i64) {
        let mut r = Cursor(&self.body[4..]);
        if self.version >= 2 {
            r.bytes(1);
        }
        assert_eq!(r.i32(), 1, "one topic");
        let topic = r.string().unwrap();
        assert_eq!(r.i32(), 1, "one partition");
        let partition = r.i32();
        if self.version >= 4 {
            r.i32();
        }
        (topic, partition, r.i64())
    }
}

/// Big-endian writing of answers, chained.
trait Put {
    fn i8(&mut self, v: i8) -> &mut Self;
    fn i16(&mut self, v: i16) -> &mut Self;
    fn i32(&mut self, v: i32) -> &mut Self;
    fn i64(&mut self, v: i64) -> &mut Self;
    fn str(&mut self, s: &str) -> &mut Self;
}

impl Put for Vec<u8> {
    fn i8(&mut self, v: i8) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.i16(i16::try_from(s.len()).unwrap())
            .extend_from_slice(s.as_bytes());
        self
    }
}

fn len<T>(items: &[T]) -> i32 {
    i32::try_from(items.len()).unwrap()
}

pub fn api_versions_answer(versions: &[(i16, i16, i16)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.i16(0).i32(len(versions));
    for (key, min, max) in versions {
        b.i16(*key).i16(*min).i16(*max);
    }
    b
}

/// Metadata (v4-v8): this broker as node 1 (and controller), each topic
/// with one partition led by node 1.
pub fn metadata_answer(version: i16, port: u16, topics: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    // Throttle, one broker (node, host, port, no rack), no cluster id, controller.
    b.i32(0).i32(1).i32(1).str("127.0.0.1").i32(port.into());
    b.i16(-1).i16(-1).i32(1);
    b.i32(len(topics));
    for topic in topics {
        // Not internal; partition 0, no error, led by node 1.
        b.i16(0).str(topic).i8(0).i32(1).i16(0).i32(0).i32(1);
        if version >= 7 {
            b.i32(0); // leader epoch
        }
        b.i32(1).i32(1).i32(1).i32(1); // replicas, in-sync replicas
        if version >= 5 {
            b.i32(0); // offline replicas
        }
        if version >= 8 {
            b.i32(0); // topic authorized operations
        }
    }
    if version >= 8 {
        b.i32(0); // cluster authorized operations
    }
    b
}

/// InitProducerId, flexible or not: `frame_of` adds the header byte, and
/// the last byte (tagged fields, v2+) is ignored before v2.
pub fn init_producer_id_answer(error: i16, producer_id: i64, epoch: i16) -> Vec<u8> {
    let mut b = Vec::new();
    b.i32(0).i16(error).i64(producer_id).i16(epoch).i8(0);
    b
}

pub fn produce_answer(version: i16, topic: &str, partition: i32, error: i16, base_offset: i64) -> Vec<u8> {
    let mut b = Vec::new();
    b.i32(1).str(topic).i32(1).i32(partition);
    b.i16(error).i64(base_offset).i64(-1);
    if version >= 5 {
        b.i64(0); // log start offset
    }
    if version >= 8 {
        b.i32(0).i16(-1); // no record errors, no message
    }
    b.i32(0); // throttle
    b
}

/// Fetch (v4-v6) of one partition with these record-set bytes.
pub fn fetch_answer(
    version: i16,
    topic: &str,
    partition: i32,
    error: i16,
    hw: i64,
    records: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    // Throttle; the high watermark is the last stable offset too.
    b.i32(0).i32(1).str(topic).i32(1).i32(partition);
    b.i16(error).i64(hw).i64(hw);
    if version >= 5 {
        b.i64(0); // log start offset
    }
    b.i32(-1).i32(len(records)).extend_from_slice(records); // no aborted transactions
    b
}

pub fn list_offsets_answer(version: i16, topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    let mut b = Vec::new();
    if version >= 2 {
        b.i32(0); // throttle
    }
    b.i32(1).str(topic).i32(1).i32(partition);
    b.i16(0).i64(-1).i64(offset);
    if version >= 4 {
        b.i32(0); // leader epoch
    }
    b
}

/// A record batch of `records` at `base_offset`.
pub fn batch(base_offset: i64, records: &[Record]) -> Vec<u8> {
    let mut b = Vec::new();
    write_record_batch(&mut b, records, Compression::None, ProducerStamp::NONE).unwrap();
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
    b
}

/// `n` records with values `v0`, `v1`, ...
pub fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(Some(b"k".to_vec()), Some(format!("v{i}").into_bytes())).at(1_700_000_000_000))
        .collect()
}
