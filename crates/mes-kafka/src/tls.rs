//! Feature `tls`: [`TlsSettings`] to a rustls client configuration, with
//! the ring provider chosen explicitly (so a build that also
//! compiles rustls' aws-lc-rs provider, through another crate, still works).
//!
//! The server certificate verifier is rustls' own WebPKI verifier wrapped
//! twice over: it may check a configured name instead of the broker's host,
//! and it reports the first rejection, so that a connect ends at once with
//! the reason instead of retrying a handshake that cannot succeed until the
//! connect timeout hides why.
//!
//! A broker that requires a client certificate the client lacks cannot be
//! told apart from one that merely asks for one: the handshake succeeds and
//! the broker closes the connection. Without a client certificate the client therefore
//! notes whether a broker asked for one, and a failed connect says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{KeyPem, Pem, TlsSettings};
use crate::error::{BoxError, Error};

/// The first broker certificate rejected by a client configuration's
/// verifier, and whether a broker
/// asked for a client certificate the configuration does not have.
#[derive(Default)]
pub(crate) struct Rejections {
    first: OnceLock<(String, rustls::Error)>,
    client_cert_asked: AtomicBool,
}

impl std::fmt::Debug for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejections")
            .field("first", &self.first.get())
            .finish_non_exhaustive()
    }
}

impl Rejections {
    fn record(&self, server: &ServerName<'_>, error: &rustls::Error) {
        // The first rejection is the one that explains the failure.
        let _ = self.first.set((server.to_str().into_owned(), error.clone()));
    }

    /// `error` of a failed connect, with the likely reason added when a
    /// broker asked for a client certificate and none is configured.
    pub(crate) fn explain(&self, error: Error) -> Error {
        if !self.client_cert_asked.load(Ordering::Relaxed) {
            return error;
        }
        match error {
            Error::Io { .. } | Error::Timeout { .. } | Error::Connect { .. } | Error::NoBroker { .. } => {
                Error::TlsSetup {
                    what: NO_CLIENT_CERTIFICATE.to_owned(),
                    source: Box::new(error),
                }
            }
            other => other,
        }
    }

    /// The first rejection so far, as the crate's error.
    pub(crate) fn rejected(&self) -> Option<Error> {
        self.first.get().map(|(server, error)| Error::TlsHandshake {
            server: server.clone(),
            source: Box::new(error.clone()),
        })
    }
}

const NO_CLIENT_CERTIFICATE: &str = "a broker asked for a client certificate and none is configured \
     (TlsSettings::client_cert_files, KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE)";

/// No client certificate, noting when a broker asks for one.
#[derive(Debug)]
struct NoClientCert(Arc<Rejections>);

impl ResolvesClientCert for NoClientCert {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.client_cert_asked.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    server_name: Option<ServerName<'static>>,
    rejections: Arc<Rejections>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            .inspect_err(|e| self.rejections.record(name, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The TLS side of a client: its rustls connector and where its verifier
/// reports rejected broker certificates.
pub(crate) struct Tls {
    connector: tokio_rustls::TlsConnector,
    rejections: Arc<Rejections>,
}

impl Tls {
    pub(crate) fn new(settings: &TlsSettings) -> Result<Self, Error> {
        let (config, rejections) = client_config(settings)?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(config),
            rejections,
        })
    }

    /// `stream` wrapped in TLS with the broker at `address`, within `bound`.
    pub(crate) async fn wrap(
        &self,
        address: &str,
        stream: tokio::net::TcpStream,
        bound: std::time::Duration,
    ) -> Result<Box<dyn crate::connection::BrokerStream>, Error> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| setup_error(format!("{host:?} is no server name"), e))?;
        let failed = |source: std::io::Error| {
            self.rejections.rejected().unwrap_or_else(|| Error::Connect {
                address: address.to_owned(),
                source: Arc::new(source),
            })
        };
        match tokio::time::timeout(bound, self.connector.connect(name, stream)).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake: no answer within {bound:?}"),
            ))),
        }
    }

    /// `error` of a failed connect, explained by what TLS saw.
    pub(crate) fn explain(&self, error: Error) -> Error {
        self.rejections.explain(error)
    }
}

fn setup_error(what: impl Into<String>, source: impl Into<BoxError>) -> Error {
    Error::TlsSetup {
        what: what.into(),
        source: source.into(),
    }
}

/// The rustls configuration for `settings`, and where its verifier reports
/// rejected broker certificates. Reads the files; makes no connection.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<(Arc<ClientConfig>, Arc<Rejections>), Error> {
    let provider = Arc::new(ring::default_provider());
    let roots = match &settings.ca {
        Some(ca) => ca_roots(ca)?,
        None => system_roots()?,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| setup_error("cannot build the certificate verifier", e))?;
    let server_name = settings
        .server_name
        .as_ref()
        .map(|name| {
            ServerName::try_from(name.clone())
                .map_err(|e| setup_error(format!("server name {name:?} is no DNS name or IP address"), e))
        })
        .transpose()?;
    let rejections = Arc::new(Rejections::default());
    let verifier = Verifier {
        webpki,
        server_name,
        rejections: Arc::clone(&rejections),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_error("cannot set up rustls", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match &settings.client {
        None => builder.with_client_cert_resolver(Arc::new(NoClientCert(Arc::clone(&rejections)))),
        Some((cert, key)) => {
            let chain = certificates(cert, "client certificate")?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                let what = format!(
                    "the client certificate ({}) and key do not go together",
                    describe(cert)
                );
                setup_error(what, e)
            })?
        }
    };
    Ok((Arc::new(config), rejections))
}

fn describe(pem: &Pem) -> String {
    match pem {
        Pem::File(path) => format!("file {}", path.display()),
        Pem::Inline(_) => "inline PEM".to_owned(),
    }
}

fn read(pem: &Pem, what: &str) -> Result<Vec<u8>, Error> {
    match pem {
        Pem::File(path) => std::fs::read(path)
            .map_err(|e| setup_error(format!("cannot read the {what} ({})", describe(pem)), e)),
        Pem::Inline(bytes) => Ok(bytes.clone()),
    }
}

/// Every `CERTIFICATE` block of `pem`; at least one.
fn certificates(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = read(pem, what)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup_error(format!("the {what} ({}) is not valid PEM", describe(pem)), e))?;
    if certs.is_empty() {
        let what = format!("no certificate in the {what} ({})", describe(pem));
        return Err(setup_error(what, "no `BEGIN CERTIFICATE` block"));
    }
    Ok(certs)
}

fn ca_roots(ca: &Pem) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, "CA certificate")? {
        roots.add(cert).map_err(|e| {
            let what = format!("a CA certificate ({}) cannot be a trust anchor", describe(ca));
            setup_error(what, e)
        })?;
    }
    Ok(roots)
}

/// The platform's roots (on Linux: `SSL_CERT_FILE`, `SSL_CERT_DIR`, else the
/// usual bundle paths).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    for cert in found.certs {
        // One unusable certificate in a system bundle is skipped, as
        // browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        let source: BoxError = match found.errors.into_iter().next() {
            Some(error) => Box::new(error),
            None => "the system store is empty".into(),
        };
        return Err(setup_error(
            "no trusted root certificate in the system store (SSL_CERT_FILE, SSL_CERT_DIR); \
             give the brokers' CA with TlsSettings::ca_file or KAFKA_TLS_CA_FILE",
            source,
        ));
    }
    Ok(roots)
}

/// The private key of `key`. Errors name the file, never the content: the
/// PEM parser's own errors may quote a line of the input, so they are not
/// passed on.
fn private_key(key: &KeyPem) -> Result<PrivateKeyDer<'static>, Error> {
    let text = read(&key.0, "client key")?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|_| {
        setup_error(
            format!("no PEM private key in the client key ({})", describe(&key.0)),
            "expected a `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1) block",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup_error_of(settings: &TlsSettings) -> String {
        match client_config(settings) {
            Err(Error::TlsSetup { what, source }) => format!("{what}: {source}"),
            other => panic!("expected TlsSetup, got {other:?}"),
        }
    }

    #[test]
    fn unusable_files_are_setup_errors_that_name_them() {
        let missing = setup_error_of(&TlsSettings::new().ca_file("/nonexistent/ca.pem"));
        assert!(
            missing.contains("cannot read the CA certificate (file /nonexistent/ca.pem)"),
            "{missing}"
        );

        let no_cert = setup_error_of(&TlsSettings::new().ca_pem("just text"));
        assert!(
            no_cert.contains("no certificate in the CA certificate (inline PEM)"),
            "{no_cert}"
        );

        let bad_name = setup_error_of(&TlsSettings::new().ca_pem(TEST_CA).server_name("not a name!"));
        assert!(bad_name.contains("\"not a name!\""), "{bad_name}");
    }

    #[test]
    fn a_ca_in_pem_and_a_server_name_make_a_configuration() {
        let (config, _) =
            client_config(&TlsSettings::new().ca_pem(TEST_CA).server_name("localhost")).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    /// A self-signed CA certificate, for parsing only (`openssl req -x509
    /// -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj
    /// /CN=mes-unit-test-ca`; its key was thrown away).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUd0xTlrEpgjCqG6mWRwCUct2bCsowCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQbWVzLXVuaXQtdGVzdC1jYTAeFw0yNjExMjYxNjU0MjZaFw0z
NjExMjMxNjU0MjZaMBsxGTAXBgNVBAMMEG1lcy11bml0LXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAQ0RDbwg6kPdqqyf+vGbySTz3FuS6wQ3z8JZ6wM
TQRD5QOWSMBOMp1yV7y2PXL9Imu4t5e1bDjRS9n6zUNSyLa4o1MwUTAdBgNVHQ4E
FgQUzCou2ZkdzbkZooluvP2UVz35Tb8wHwYDVR0jBBgwFoAUzCou2ZkdzbkZoolu
vP2UVz35Tb8wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBZQmIg
aah7uUFpMw4sDt3AmbwdTLcOvsPTaUiRniT+8wIhAPqR1YU4sGrcyjJuAX9xxiyf
JHSbPlnoZ11rfA7TshHa
-----END CERTIFICATE-----
";
}
