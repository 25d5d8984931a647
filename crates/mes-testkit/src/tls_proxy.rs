//! A TLS-terminating TCP proxy, for servers that cannot speak TLS
//! themselves: tansu 0.6 takes `--cert` and `--key` but serves every
//! connection in plain text.
//!
//! It runs on a tokio runtime of its own, on a thread of its own, so a
//! synchronous caller (`cargo xtask`) can keep it for as long as it needs.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::pki::Issued;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_BOUND: Duration = Duration::from_secs(10);

/// A running proxy: TLS on `127.0.0.1:port`, plain TCP to its upstream.
/// Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// Listens on a spare port of 127.0.0.1 with the certificate `server`
    /// and forwards each connection's plain bytes to `upstream`, which need
    /// not be listening yet. With `client_ca`, clients must present a
    /// certificate signed by that CA (mTLS); without, none is asked for.
    pub fn start(server: &Issued, client_ca: Option<&Path>, upstream: SocketAddr) -> io::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(server, client_ca)?));
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("tls-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(serve(listener, acceptor, upstream));
                            // Until the proxy is dropped; the runtime's end
                            // then ends every connection.
                            let _ = stopped.await;
                        }
                        Err(e) => eprintln!("tls proxy on port {port} cannot listen: {e}"),
                    }
                });
            })?;
        Ok(Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn invalid(what: String) -> impl FnOnce(tokio_rustls::rustls::pki_types::pem::Error) -> io::Error {
    move |e| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

fn server_config(server: &Issued, client_ca: Option<&Path>) -> io::Result<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let chain = CertificateDer::pem_file_iter(&server.cert)
        .and_then(Iterator::collect)
        .map_err(invalid(format!("certificate {}", server.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&server.key)
        .map_err(invalid(format!("key {}", server.key.display())))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(invalid(format!("CA {}", ca.display())))? {
                roots
                    .add(cert.map_err(invalid(format!("CA {}", ca.display())))?)
                    .map_err(io::Error::other)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(io::Error::other)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).map_err(io::Error::other)
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, upstream: SocketAddr) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // A failed handshake (no or an unknown client certificate, a
            // client that does not trust us) just ends the connection: the
            // client sees the TLS alert.
            let Ok(Ok(mut tls)) = tokio::time::timeout(HANDSHAKE_BOUND, acceptor.accept(stream)).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = plain.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}
