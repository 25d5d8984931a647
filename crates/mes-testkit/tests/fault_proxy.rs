//! The fault proxy in front of the real Redis: what passes, what is held,
//! what is reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use mes_testkit::fault_proxy::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an answer that must come.
const BOUND: Duration = Duration::from_secs(10);

fn redis() -> SocketAddr {
    let url = mes_testkit::redis_url();
    let authority = url.trim_start_matches("redis://").trim_end_matches('/');
    authority.to_socket_addrs().unwrap().next().unwrap()
}

async fn ping(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"PING\r\n").await?;
    read_some(stream).await
}

async fn read_some(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buffer = [0_u8; 64];
    let n = tokio::time::timeout(BOUND, stream.read(&mut buffer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(String::from_utf8_lossy(buffer.get(..n).unwrap()).into_owned())
}

#[test]
fn a_proxy_in_front_of_a_url_keeps_its_user_and_path() {
    let (proxy, url) = FaultProxy::in_front_of("postgres://postgres@127.0.0.1:5432/test").unwrap();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/test", proxy.port())
    );
    let (proxy, url) = FaultProxy::in_front_of("redis://127.0.0.1:6379").unwrap();
    assert_eq!(url, format!("redis://127.0.0.1:{}", proxy.port()));
    assert!(FaultProxy::in_front_of("127.0.0.1:6379").is_err());
}

#[tokio::test]
async fn bytes_pass_and_a_delay_holds_each_chunk() {
    let proxy = FaultProxy::start(redis()).unwrap();
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(ping(&mut stream).await.unwrap(), "+PONG\r\n");

    assert_eq!(proxy.counts().delayed, 0);

    proxy.set(Fault::Delay(Duration::from_millis(50)));
    assert_eq!(ping(&mut stream).await.unwrap(), "+PONG\r\n");
    // Held once on the way up and once on the way down: the fault applies
    // to a connection opened before it was set.
    assert_eq!(proxy.counts().delayed, 2);
    proxy.heal();
    assert_eq!(ping(&mut stream).await.unwrap(), "+PONG\r\n");
    assert_eq!(proxy.counts().delayed, 2);
    assert_eq!(proxy.counts().accepted, 1);
}

#[tokio::test]
async fn a_cut_resets_open_connections_and_refuses_new_ones_until_healed() {
    let proxy = FaultProxy::start(redis()).unwrap();
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(ping(&mut open).await.unwrap(), "+PONG\r\n");

    proxy.set(Fault::Cut);
    // The open connection ends: EOF or reset, never an answer.
    match read_some(&mut open).await {
        Ok(text) => assert_eq!(text, ""),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // The reset may come before the connect has seen its handshake done,
    // or after: either way no answer.
    let refused = async {
        let mut stream = TcpStream::connect(proxy.address()).await?;
        ping(&mut stream).await
    };
    match refused.await {
        Ok(text) => assert_eq!(text, ""),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }

    proxy.heal();
    let mut healed = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(ping(&mut healed).await.unwrap(), "+PONG\r\n");
    assert_eq!(proxy.counts().reset, 2);
}

#[tokio::test]
async fn a_blackhole_holds_everything_until_healed_and_then_delivers_it() {
    let proxy = FaultProxy::start(redis()).unwrap();
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    assert_eq!(ping(&mut open).await.unwrap(), "+PONG\r\n");

    proxy.set(Fault::Blackhole);
    open.write_all(b"PING\r\n").await.unwrap();
    let mut buffer = [0_u8; 64];
    // Nothing comes back while it lasts (the window is what "nothing" means
    // here, not a speed requirement).
    let silent = tokio::time::timeout(Duration::from_millis(300), open.read(&mut buffer)).await;
    assert!(silent.is_err(), "an answer passed the blackhole: {silent:?}");
    // A new connection is accepted but not served either.
    let mut held = TcpStream::connect(proxy.address()).await.unwrap();
    held.write_all(b"PING\r\n").await.unwrap();

    proxy.heal();
    assert_eq!(read_some(&mut open).await.unwrap(), "+PONG\r\n");
    assert_eq!(read_some(&mut held).await.unwrap(), "+PONG\r\n");
}
