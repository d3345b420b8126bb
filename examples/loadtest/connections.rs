//! The load generator's HTTP client for the measured phases: plain HTTP/1.1 keep-alive connections
//! to the service, each carrying one request at a time and reused.
//!
//! The generator shares the machine's cores with the service and Postgres, so every cycle it spends
//! is taken from what it measures. reqwest, made for general use, cost it about as much CPU per
//! status poll as the service spent answering it (URL parsing, proxy and pool bookkeeping, header
//! maps, a JSON tree per answer). A `hyper` connection per in-flight request is closer to what `wrk`
//! or `autocannon` do.

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    body::Bytes,
    client::conn::http1::{SendRequest, handshake},
    header::{CONTENT_TYPE, HOST, HeaderName},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;

pub struct Connections {
    addresses: Vec<SocketAddr>,
    hosts: Vec<String>,
    /// Which address the next new connection goes to: the service processes in turn, so each
    /// gets an even share of the workers' connections.
    next: AtomicUsize,
    idle: Mutex<Vec<(usize, Sender)>>,
}

impl Connections {
    /// Connections to one or several service processes (one database behind them all).
    pub fn to_all(addresses: Vec<SocketAddr>) -> Self {
        assert!(!addresses.is_empty(), "at least one service address");
        Self {
            hosts: addresses.iter().map(SocketAddr::to_string).collect(),
            addresses,
            next: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// POSTs a JSON body; `None` when no answer came (a refused or broken connection).
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let request = Request::post(path).header(CONTENT_TYPE, "application/json");
        self.send(request, headers, body).await
    }

    /// GETs `path`; `None` when no answer came.
    pub async fn get(&self, path: &str, headers: &[(HeaderName, &str)]) -> Option<(StatusCode, Bytes)> {
        self.send(Request::get(path), headers, Bytes::new()).await
    }

    async fn send(
        &self,
        request: hyper::http::request::Builder,
        headers: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let (host, mut sender) = self.ready_sender().await?;
        let mut request = request.header(HOST, &self.hosts[host]);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Full::new(body)).expect("a well-formed request");
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        // Back to the pool only when whole: a connection that failed above is simply dropped.
        self.idle.lock().unwrap().push((host, sender));
        Some((status, body))
    }

    /// An idle connection still open, else a new one. The server closes a keep-alive connection
    /// that stays idle past its header timeout (between the scenarios, say), as a real client
    /// finds its pooled connections closed; like one, this opens another instead of failing.
    async fn ready_sender(&self) -> Option<(usize, Sender)> {
        loop {
            let idle = self.idle.lock().unwrap().pop();
            match idle {
                Some((address, mut sender)) => {
                    if sender.ready().await.is_ok() {
                        return Some((address, sender));
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    async fn connect(&self) -> Option<(usize, Sender)> {
        let address = self.next.fetch_add(1, Ordering::Relaxed) % self.addresses.len();
        let stream = TcpStream::connect(self.addresses[address]).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        Some((address, sender))
    }
}
