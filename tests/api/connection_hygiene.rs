//! Slow or silent clients cannot pile up: a connection that does not send a request's headers in
//! time is closed, whether it never sent anything, sent half a request line, or went quiet after an
//! answer on a keep-alive connection; and beyond the connection cap new ones wait their turn.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Options, TestApp};
use entitle::config::ConnectionLimits;

fn with_limits(header_timeout: Duration, max_connections: usize) -> Options {
    Options {
        connection_limits: ConnectionLimits {
            header_timeout,
            max_connections,
        },
        ..Options::default()
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (end of stream or a reset), skipping whatever it
/// answered first; true if it did within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

async fn health_request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection instead of answering");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed_and_the_service_keeps_answering() {
    let app = TestApp::spawn_with(with_limits(Duration::from_secs(1), 4096)).await;

    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(connect(&app).await);
    }
    let mut half = Vec::new();
    for _ in 0..50 {
        let mut stream = connect(&app).await;
        stream.write_all(b"POST /order-status HT").await.unwrap();
        half.push(stream);
    }

    // Meanwhile a real client is served.
    let mut client = connect(&app).await;
    assert!(health_request(&mut client).await.starts_with("HTTP/1.1 200"));

    for (i, stream) in silent.iter_mut().chain(half.iter_mut()).enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(60)).await,
            "connection {i} is still open long after the header timeout"
        );
    }
}

#[tokio::test]
async fn a_keep_alive_connection_that_goes_quiet_after_an_answer_is_closed() {
    let app = TestApp::spawn_with(with_limits(Duration::from_secs(1), 4096)).await;
    let mut stream = connect(&app).await;
    assert!(health_request(&mut stream).await.starts_with("HTTP/1.1 200"));
    // The connection stays usable right after its answer...
    assert!(health_request(&mut stream).await.starts_with("HTTP/1.1 200"));
    // ...and is closed once it has been idle past the header timeout.
    assert!(closed_within(&mut stream, Duration::from_secs(60)).await);
}

#[tokio::test]
async fn beyond_the_connection_cap_a_new_connection_waits_until_one_closes() {
    let app = TestApp::spawn_with(with_limits(Duration::from_secs(120), 4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&app).await;
        // Each holds its place: served once, then idle (well within the long header timeout).
        assert!(health_request(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }

    // The kernel takes the fifth connection, but the server does not serve it yet.
    let mut fifth = connect(&app).await;
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf)).await;
    assert!(early.is_err(), "a connection beyond the cap was served: {early:?}");

    // One place frees up: the waiting request is answered.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(30), fifth.read(&mut buf))
        .await
        .expect("the waiting connection was served once a place freed up")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
