//! The publisher over TLS, against the brokers of the run that speak only
//! TLS (`MES_TEST_KAFKA_TLS_BROKERS`; `MES_TEST_KAFKA_MTLS_BROKERS` requires
//! a client certificate), whose certificates a throwaway CA signed
//! (`MES_TEST_KAFKA_TLS_CA`). `cargo xtask test` starts them: tansu behind
//! a TLS-terminating proxy that tansu advertises, so every connection a
//! client makes, bootstrap or leader, goes through TLS.
//!
//! The failure cases need a second CA, made here with `openssl` like the
//! first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use mes_events_types::decode;
use mes_publisher::{Error, EventPublisher, PublisherConfig, TlsSettings};
use mes_testkit::fault_proxy::FaultProxy;
use mes_testkit::pki::TestCa;
use serde_json::json;

/// Far above what any failing case below may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

fn tls_config(brokers: &str) -> PublisherConfig {
    PublisherConfig::new(brokers.split(','))
        .client_id("mes-publisher-tls-tests")
        .connect_timeout(CONNECT_TIMEOUT)
}

#[tokio::test]
async fn publishes_over_tls_and_reads_back_through_the_same_settings() {
    let config = tls_config(&mes_testkit::kafka_tls_brokers())
        .tls(TlsSettings::new().ca_file(mes_testkit::kafka_tls_ca()));
    let publisher = EventPublisher::connect(config.clone()).await.unwrap();
    let event_type = unique_event_type("tls");
    let topic = event_type.topic().unwrap();
    create_topic(&publisher, &topic, 3).await;

    let events: Vec<_> = (0..30)
        .map(|n| raw_event(&event_type, &format!("WO-{}", n % 5), json!({ "n": n })))
        .collect();
    let landed: Vec<_> = publisher
        .publish_batch(&events)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    publisher.health_check().await.unwrap();
    publisher.disconnect().await;

    // Read back through mes-kafka's fetch path, which mes-sync's consumer
    // uses: the same connection settings give a client on TLS too.
    let read = read_topic_through_mes_kafka(config.kafka(), &topic).await;
    assert_eq!(read.len(), events.len());
    for (event, landed) in events.iter().zip(&landed) {
        let record = read
            .iter()
            .find(|r| (r.partition, r.offset) == (landed.partition, landed.offset))
            .unwrap_or_else(|| panic!("{landed:?} not read back"));
        assert_eq!(&decode(&record.record).unwrap(), event);
    }
}

#[tokio::test]
async fn a_broker_certificate_of_an_untrusted_ca_ends_the_connect_at_once() {
    let brokers = mes_testkit::kafka_tls_brokers();
    let scratch = Scratch::new("other-ca");
    let other = TestCa::create(&scratch.0, "mes-test-other-ca").unwrap();
    let host = brokers.split(':').next().unwrap().to_owned();

    let broker = brokers
        .split(',')
        .next()
        .unwrap()
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    for (case, settings) in [
        ("another CA", TlsSettings::new().ca_file(other.cert())),
        ("the system's roots", TlsSettings::new()),
    ] {
        // Through a proxy that counts the connections: one, not retried
        // until the connect timeout.
        let proxy = FaultProxy::start(broker).unwrap();
        let through = format!("{host}:{}", proxy.port());
        let outcome = EventPublisher::connect(tls_config(&through).tls(settings)).await;
        match outcome {
            Err(error @ Error::TlsHandshake { .. }) => {
                let text = chain(&error);
                assert!(text.contains(&format!("{host:?} was rejected")), "{case}: {text}");
                assert!(text.contains("UnknownIssuer"), "{case}: {text}");
            }
            other => panic!("{case}: expected TlsHandshake, got {:?}", other.map(drop)),
        }
        assert_eq!(
            proxy.counts().accepted,
            1,
            "{case}: the handshake was tried again"
        );
    }
}

#[tokio::test]
async fn an_address_the_certificate_does_not_name_needs_the_server_name() {
    let brokers = mes_testkit::kafka_tls_brokers();
    let (host, port) = brokers.split(',').next().unwrap().rsplit_once(':').unwrap();
    // The broker's certificate names its host, not its address.
    let ip = (host, port.parse::<u16>().unwrap())
        .to_socket_addrs()
        .unwrap()
        .find(std::net::SocketAddr::is_ipv4)
        .unwrap();
    let by_address = ip.to_string();
    let ca = mes_testkit::kafka_tls_ca();

    let rejected =
        EventPublisher::connect(tls_config(&by_address).tls(TlsSettings::new().ca_file(&ca))).await;
    match rejected {
        Err(error @ Error::TlsHandshake { .. }) => {
            let text = chain(&error);
            assert!(text.contains(&format!("{:?}", ip.ip().to_string())), "{text}");
            assert!(text.contains("not valid for name"), "{text}");
        }
        other => panic!("expected TlsHandshake, got {:?}", other.map(drop)),
    }

    let publisher = EventPublisher::connect(
        tls_config(&by_address).tls(TlsSettings::new().ca_file(&ca).server_name(host)),
    )
    .await
    .unwrap();
    let event_type = unique_event_type("tlsname");
    create_topic(&publisher, &event_type.topic().unwrap(), 1).await;
    publisher
        .publish(&raw_event(&event_type, "WO-1", json!({})))
        .await
        .unwrap();
    publisher.disconnect().await;
}

#[tokio::test]
async fn a_broker_requiring_client_certificates_takes_ours_from_files_or_pem() {
    let brokers = mes_testkit::kafka_mtls_brokers();
    let ca = mes_testkit::kafka_tls_ca();
    let client = mes_testkit::kafka_tls_client_cert();

    let publisher = EventPublisher::connect(
        tls_config(&brokers).tls(
            TlsSettings::new()
                .ca_file(&ca)
                .client_cert_files(&client.cert, &client.key),
        ),
    )
    .await
    .unwrap();
    let event_type = unique_event_type("mtls");
    create_topic(&publisher, &event_type.topic().unwrap(), 2).await;
    let landed = publisher
        .publish(&raw_event(&event_type, "WO-7", json!({"mtls": true})))
        .await
        .unwrap();
    assert_eq!(landed.offset, 0);
    publisher.disconnect().await;

    let read = |path: &PathBuf| std::fs::read(path).unwrap();
    let inline = EventPublisher::connect(
        tls_config(&brokers).tls(
            TlsSettings::new()
                .ca_pem(read(&ca))
                .client_cert_pem(read(&client.cert), read(&client.key)),
        ),
    )
    .await
    .unwrap();
    inline.health_check().await.unwrap();
    inline.disconnect().await;
}

/// The broker's "certificate required" alert ends the connect, and the
/// error says what to configure: a settings problem, not a retry.
#[tokio::test]
async fn without_a_client_certificate_a_broker_requiring_one_is_a_tls_setup_error() {
    let config = tls_config(&mes_testkit::kafka_mtls_brokers())
        .tls(TlsSettings::new().ca_file(mes_testkit::kafka_tls_ca()));
    match EventPublisher::connect(config).await {
        Err(error @ Error::TlsSetup { .. }) => {
            let text = chain(&error);
            assert!(
                text.contains("a broker asked for a client certificate and none is configured")
                    && text.contains("KAFKA_TLS_CERT_FILE"),
                "{text}"
            );
        }
        other => panic!("expected TlsSetup, got {:?}", other.map(drop)),
    }
}

#[tokio::test]
async fn unusable_files_fail_before_connecting_and_never_show_the_key() {
    let scratch = Scratch::new("bad-files");
    let ca = TestCa::create(&scratch.0, "mes-test-files-ca").unwrap();
    let client = ca.client_cert("client").unwrap();
    let other = ca.client_cert("other").unwrap();
    let garbage_key = scratch.0.join("garbage.key");
    std::fs::write(
        &garbage_key,
        "-----BEGIN PRIVATE KEY-----\nTOPSECRET-not-base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // Nothing listens there: an error that needed the network would come
    // at the connect timeout instead of at once.
    let nowhere = "127.0.0.1:9";

    let cases = [
        (
            "missing CA file",
            TlsSettings::new().ca_file(scratch.0.join("missing.pem")),
            "missing.pem",
        ),
        (
            "key file that is no key",
            TlsSettings::new()
                .ca_file(ca.cert())
                .client_cert_files(&client.cert, &garbage_key),
            "no PEM private key in the client key (file ",
        ),
        (
            "key of another certificate",
            TlsSettings::new()
                .ca_file(ca.cert())
                .client_cert_files(&client.cert, &other.key),
            "do not go together",
        ),
        (
            "certificate file that is a key",
            TlsSettings::new()
                .ca_file(ca.cert())
                .client_cert_files(&client.key, &client.key),
            "no certificate in the client certificate (file ",
        ),
    ];
    let key_text = std::fs::read_to_string(&client.key).unwrap();
    let key_lines: Vec<&str> = key_text.lines().filter(|l| !l.starts_with("-----")).collect();
    for (case, settings, expected) in cases {
        // A setup error, not the connect error a retry against `nowhere`
        // would end in: the settings are refused before any connection.
        let error = EventPublisher::connect(tls_config(nowhere).tls(settings))
            .await
            .expect_err(case);
        let text = format!("{} / {error:?}", chain(&error));
        assert!(matches!(error, Error::TlsSetup { .. }), "{case}: {text}");
        assert!(text.contains(expected), "{case}: {text}");
        assert!(!text.contains("TOPSECRET"), "{case}: {text}");
        assert!(
            key_lines.iter().all(|line| !text.contains(line)),
            "{case}: {text}"
        );
    }
}

#[tokio::test]
async fn debug_of_a_tls_configuration_shows_no_key_material() {
    let scratch = Scratch::new("debug");
    let ca = TestCa::create(&scratch.0, "mes-test-debug-ca").unwrap();
    let client = ca.client_cert("client").unwrap();
    let key = std::fs::read_to_string(&client.key).unwrap();
    let config = tls_config("localhost:9093").tls(
        TlsSettings::new()
            .ca_file(ca.cert())
            .client_cert_pem(std::fs::read(&client.cert).unwrap(), key.clone()),
    );
    let shown = format!("{config:?} {config:#?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    for line in key.lines() {
        assert!(!shown.contains(line), "{line} in {shown}");
    }
}
