//! One connection to one broker: TCP (or TLS), SASL, `ApiVersions`, then
//! any number of requests in flight, matched to their answers by
//! correlation id.
//!
//! - A request frame is written whole, in one `write_all` (length and body
//!   together), with `TCP_NODELAY` set: no Nagle stall behind a small write.
//! - A reader task reads answers as they come and hands each to the request
//!   waiting for it. Answers are read as their bytes arrive, up to
//!   [`KafkaConfig::max_answer_bytes`](crate::KafkaConfig::max_answer_bytes):
//!   a size prefix is never allocated up front.
//! - When the connection breaks (read or write error, the broker closes it,
//!   a request times out, a write is abandoned halfway), every request in
//!   flight fails with the one cause, shared through an `Arc`, and every
//!   later request fails at once: the owner opens a new connection.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rsasl::prelude::{Mechname, SASLClient, SASLConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::debug;

use crate::config::{KafkaConfig, SaslMechanism};
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::metrics::{self, RequestMetrics};
use crate::protocol::api_versions::ApiVersionsRequest;
use crate::protocol::sasl::{SaslAuthenticateRequest, SaslHandshakeRequest};
use crate::protocol::{self, Request};

/// A byte stream to a broker: TCP, TLS over TCP, or (in tests) an
/// in-memory pipe.
pub trait BrokerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> BrokerStream for S {}

/// A received answer: the frame after its size prefix, correlation id first.
#[derive(Debug)]
pub(crate) struct Answer(Vec<u8>);

impl Answer {
    /// The answer's body, after the correlation id.
    pub(crate) fn body(&self) -> &[u8] {
        self.0.get(4..).unwrap_or_default()
    }
}

type Waiter = oneshot::Sender<std::result::Result<Answer, Arc<std::io::Error>>>;

#[derive(Default)]
struct State {
    next_correlation: i32,
    waiting: HashMap<i32, Waiter>,
    /// Why the connection is unusable, once it is.
    broken: Option<Arc<std::io::Error>>,
}

struct Shared {
    state: Mutex<State>,
    /// `mes.kafka.connections.broken` of this broker.
    broken: ::metrics::Counter,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection broken (first cause wins) and fails every
    /// request in flight with it.
    fn break_with(&self, cause: std::io::Error) {
        let mut state = self.state();
        if state.broken.is_none() {
            self.broken.increment(1);
        }
        let cause = Arc::clone(state.broken.get_or_insert_with(|| Arc::new(cause)));
        for (_, waiter) in state.waiting.drain() {
            let _ = waiter.send(Err(Arc::clone(&cause)));
        }
    }
}

/// Breaks the connection if dropped before [`defuse`](Self::defuse): a
/// request abandoned halfway through its write leaves a stream no broker
/// can read.
struct HalfWriteGuard<'a>(Option<&'a Shared>);

impl HalfWriteGuard<'_> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for HalfWriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.break_with(std::io::Error::new(
                ErrorKind::Interrupted,
                "a request was abandoned while written",
            ));
        }
    }
}

/// A connection to one broker, shared by any number of callers.
pub struct BrokerConnection {
    address: String,
    client_id: Arc<str>,
    request_timeout: Duration,
    versions: Vec<(i16, RangeInclusive<i16>)>,
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn BrokerStream>>>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    metrics: RequestMetrics,
}

impl Drop for BrokerConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("address", &self.address)
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Opens a connection to `address` as `config` says: TCP with
    /// `TCP_NODELAY`, TLS when configured, SASL when configured, then
    /// `ApiVersions`; all within the connect timeout.
    pub async fn open(address: &str, config: &KafkaConfig) -> Result<Self> {
        let tls = crate::client::tls_for(config)?;
        Self::open_with(address, config, tls.as_ref()).await
    }

    pub(crate) async fn open_with(
        address: &str,
        config: &KafkaConfig,
        tls: Option<&crate::client::Tls>,
    ) -> Result<Self> {
        let opened = Self::connect(address, config, tls).await;
        metrics::connected(address, &opened);
        opened
    }

    async fn connect(address: &str, config: &KafkaConfig, tls: Option<&crate::client::Tls>) -> Result<Self> {
        let connect_error = |source: std::io::Error| Error::Connect {
            address: address.to_owned(),
            source: Arc::new(source),
        };
        let bound = config.connect_timeout;
        let tcp = async {
            let stream = TcpStream::connect(address).await?;
            // Frames are written whole; Nagle would only hold their tails.
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match timeout(bound, tcp).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => return Err(connect_error(timed_out("connect", bound))),
        };
        let stream: Box<dyn BrokerStream> = match tls {
            None => Box::new(stream),
            Some(tls) => tls.wrap(address, stream, bound).await?,
        };
        let opened = timeout(bound, Self::handshake(address, config, stream)).await;
        let connection = match opened {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                address: address.to_owned(),
                api: "connection set-up (SASL, ApiVersions)",
                timeout: bound,
            }),
        };
        match tls {
            Some(tls) => connection.map_err(|e| tls.explain(e)),
            None => connection,
        }
    }

    /// Opens a connection over an already connected stream (a test's
    /// in-memory pipe, say): SASL when configured, then `ApiVersions`.
    pub async fn over(address: &str, config: &KafkaConfig, stream: Box<dyn BrokerStream>) -> Result<Self> {
        Self::handshake(address, config, stream).await
    }

    async fn handshake(address: &str, config: &KafkaConfig, stream: Box<dyn BrokerStream>) -> Result<Self> {
        let mut setup = Setup {
            address,
            client_id: &config.client_id,
            stream,
            correlation: 0,
            max_answer: config.max_answer_bytes,
        };
        if let Some(sasl) = &config.sasl {
            setup
                .authenticate(sasl.mechanism, &sasl.username, sasl.password.expose())
                .await
                .map_err(|e| match e {
                    // A broker that refuses a mechanism or credentials may
                    // just close the connection (tansu does): say where.
                    Error::Io { address, source } => Error::Sasl {
                        address,
                        mechanism: sasl.mechanism.name(),
                        what: "the broker closed the connection during the exchange".to_owned(),
                        source: Some(Box::new(source)),
                    },
                    other => other,
                })?;
        }
        let versions = setup.call(&ApiVersionsRequest, 0).await?;
        if versions.error_code != 0 {
            return Err(Error::broker(
                format!("ApiVersions from {address}"),
                versions.error_code,
            ));
        }
        let Setup {
            stream, correlation, ..
        } = setup;
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_correlation: correlation,
                ..State::default()
            }),
            broken: metrics::broken(address),
        });
        let reader = tokio::spawn(read_answers(
            BufReader::with_capacity(64 * 1024, read),
            Arc::clone(&shared),
            config.max_answer_bytes,
        ));
        debug!(address, "connected");
        Ok(Self {
            address: address.to_owned(),
            client_id: Arc::from(config.client_id.as_str()),
            request_timeout: config.request_timeout,
            versions: versions.apis,
            writer: tokio::sync::Mutex::new(write),
            shared,
            reader,
            metrics: RequestMetrics::new(address),
        })
    }

    /// The broker's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection broke; a broken one fails every request.
    pub fn is_broken(&self) -> bool {
        self.shared.state().broken.is_some()
    }

    /// The version of `R` to use with this broker: the highest both speak.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let broker = self
            .versions
            .iter()
            .find(|(key, _)| *key == R::API_KEY)
            .map(|(_, range)| range.clone());
        let unsupported = || Error::UnsupportedVersion {
            address: self.address.clone(),
            api: R::NAME,
            ours: R::VERSIONS,
            broker: broker.clone(),
        };
        let range = broker.clone().ok_or_else(unsupported)?;
        let highest = (*R::VERSIONS.end()).min(*range.end());
        if highest < *R::VERSIONS.start() || highest < *range.start() {
            return Err(unsupported());
        }
        Ok(highest)
    }

    /// Sends `request` in the highest version both sides speak and reads
    /// its answer, within the request timeout.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response> {
        self.call_within(request, self.request_timeout).await
    }

    /// [`call`](Self::call) with a bound of its own (a fetch adds its wait).
    pub async fn call_within<R: Request>(&self, request: &R, bound: Duration) -> Result<R::Response> {
        let version = self.version::<R>()?;
        let mut frame = Vec::new();
        protocol::frame(&mut frame, request, version, &self.client_id);
        let answer = self.send_frame(&mut frame, R::NAME, bound).await?;
        protocol::response_body::<R>(version, answer.body())
            .and_then(|body| R::decode_response(version, body))
            .map_err(|source| Error::Decode {
                address: self.address.clone(),
                api: R::NAME,
                source,
            })
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends a whole request frame (its correlation id is set here) and
    /// waits for its answer within `bound`.
    pub(crate) async fn send_frame(
        &self,
        frame: &mut [u8],
        api: &'static str,
        bound: Duration,
    ) -> Result<Answer> {
        let (correlation, answer) = {
            let mut state = self.shared.state();
            if let Some(cause) = &state.broken {
                return Err(self.io_error(Arc::clone(cause)));
            }
            state.next_correlation = state.next_correlation.wrapping_add(1);
            let correlation = state.next_correlation;
            let (waiter, answer) = oneshot::channel();
            state.waiting.insert(correlation, waiter);
            (correlation, answer)
        };
        protocol::set_correlation(frame, correlation);
        let started = Instant::now();
        let exchange = async {
            {
                let mut writer = self.writer.lock().await;
                let guard = HalfWriteGuard(Some(&self.shared));
                let written = async {
                    writer.write_all(frame).await?;
                    writer.flush().await
                }
                .await;
                guard.defuse();
                if let Err(e) = written {
                    self.shared.break_with(e);
                }
            }
            answer.await
        };
        let answer = match timeout(bound, exchange).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(cause))) => Err(self.io_error(cause)),
            Ok(Err(_)) => {
                let cause = self.shared.state().broken.clone();
                Err(self.io_error(cause.unwrap_or_else(|| Arc::new(ErrorKind::BrokenPipe.into()))))
            }
            Err(_) => {
                // The broker answers in order: one answer late means the
                // ones behind it are too. The connection goes.
                self.shared.state().waiting.remove(&correlation);
                self.shared.break_with(timed_out(api, bound));
                Err(Error::Timeout {
                    address: self.address.clone(),
                    api,
                    timeout: bound,
                })
            }
        };
        self.metrics
            .request(api, started.elapsed(), answer.as_ref().err());
        answer
    }

    fn io_error(&self, cause: Arc<std::io::Error>) -> Error {
        Error::Io {
            address: self.address.clone(),
            source: cause,
        }
    }
}

fn timed_out(what: &str, bound: Duration) -> std::io::Error {
    std::io::Error::new(ErrorKind::TimedOut, format!("{what}: no answer within {bound:?}"))
}

/// Reads one frame: its size prefix, then as many bytes as it says, grown
/// as they arrive. `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut size = [0_u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (4..=max).contains(size))
        .ok_or_else(|| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("answer of {size} bytes (at most {max})"),
            )
        })?;
    let mut frame = Vec::with_capacity(size.min(64 * 1024));
    let read = (&mut *reader).take(size as u64).read_to_end(&mut frame).await?;
    if read < size {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(frame))
}

async fn read_answers<R: AsyncRead + Unpin>(mut reader: R, shared: Arc<Shared>, max: usize) {
    loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                shared.break_with(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ));
                return;
            }
            Err(e) => {
                shared.break_with(e);
                return;
            }
        };
        let correlation = frame
            .first_chunk::<4>()
            .map(|c| i32::from_be_bytes(*c))
            .unwrap_or_default();
        let waiter = shared.state().waiting.remove(&correlation);
        match waiter {
            Some(waiter) => {
                // The caller may have stopped waiting; the answer is dropped.
                let _ = waiter.send(Ok(Answer(frame)));
            }
            None => {
                shared.break_with(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("an answer to request {correlation}, which nobody waits for"),
                ));
                return;
            }
        }
    }
}

/// The connection before it is shared: one request at a time.
struct Setup<'a> {
    address: &'a str,
    client_id: &'a str,
    stream: Box<dyn BrokerStream>,
    correlation: i32,
    max_answer: usize,
}

impl Setup<'_> {
    async fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let mut frame = Vec::new();
        protocol::frame(&mut frame, request, version, self.client_id);
        protocol::set_correlation(&mut frame, self.correlation);
        let io = |source: std::io::Error| Error::Io {
            address: self.address.to_owned(),
            source: Arc::new(source),
        };
        self.stream.write_all(&frame).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;
        let answer = read_frame(&mut self.stream, self.max_answer)
            .await
            .map_err(io)?
            .ok_or_else(|| {
                io(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ))
            })?;
        let answer = Answer(answer);
        let answered = answer.0.first_chunk::<4>().map(|c| i32::from_be_bytes(*c));
        if answered != Some(self.correlation) {
            return Err(io(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("answer to request {answered:?}, not {}", self.correlation),
            )));
        }
        R::decode_response(version, answer.body()).map_err(|source| Error::Decode {
            address: self.address.to_owned(),
            api: R::NAME,
            source,
        })
    }

    /// `SaslHandshake` v1, then the mechanism's messages in
    /// `SaslAuthenticate` frames.
    async fn authenticate(&mut self, mechanism: SaslMechanism, username: &str, password: &str) -> Result<()> {
        let name = mechanism.name();
        let address = self.address.to_owned();
        let refused = |what: String, source: Option<BoxError>| Error::Sasl {
            address: address.clone(),
            mechanism: name,
            what,
            source,
        };
        let handshake = self
            .call(
                &SaslHandshakeRequest {
                    mechanism: name.to_owned(),
                },
                1,
            )
            .await?;
        if handshake.error_code != 0 {
            return Err(refused(
                format!("the broker offers only {:?}", handshake.mechanisms),
                Some(Box::new(ErrorCode(handshake.error_code))),
            ));
        }
        let config = SASLConfig::with_credentials(None, username.to_owned(), password.to_owned())
            .map_err(|e| refused("unusable credentials".to_owned(), Some(Box::new(e))))?;
        let mechname = Mechname::parse(name.as_bytes())
            .map_err(|e| refused("unknown mechanism".to_owned(), Some(Box::new(e))))?;
        let mut session = SASLClient::new(config)
            .start_suggested(&[mechname])
            .map_err(|e| refused("cannot start".to_owned(), Some(Box::new(e))))?;
        let mut received: Option<Vec<u8>> = None;
        loop {
            let mut message = Vec::new();
            let state = session
                .step(received.as_deref(), &mut message)
                .map_err(|e| refused("authentication failed".to_owned(), Some(Box::new(e))))?;
            if state.has_sent_message() {
                let answer = self
                    .call(&SaslAuthenticateRequest { auth_bytes: message }, 1)
                    .await?;
                if answer.error_code != 0 {
                    let what = answer.error_message.unwrap_or_else(|| "refused".to_owned());
                    return Err(refused(what, Some(Box::new(ErrorCode(answer.error_code)))));
                }
                received = Some(answer.auth_bytes);
            }
            if state.is_finished() {
                return Ok(());
            }
        }
    }
}
