//! The HTTPS and admin ports survive hostile clients (in process: the real servers and the
//! webhook's router over fixture caches; no control plane). A trickled request head is cut off,
//! idle connections do not keep a real review or a probe out, bodies are bounded in size and
//! time and all together by a memory budget, reviews in flight and connections (per address
//! too) are capped, and with a client CA a caller without a certificate is refused.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use olm_pullsecret_injector::commands::certs::{DevCerts, generate};
use olm_pullsecret_injector::serving::https::{ConnectionLimits, serve_tls};
use olm_pullsecret_injector::serving::tls::{CertReloader, ClientVerifier};
use olm_pullsecret_injector::state::caches::Fixture;
use olm_pullsecret_injector::webhook::OnCopyFailure;
use olm_pullsecret_injector::webhook::http::RequestLimits;
use serde_json::json;
use support::fixtures::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

struct Server {
    addr: SocketAddr,
    certs: DevCerts,
    _world: World,
}

fn world() -> World {
    World::new(Fixture {
        catalogs: vec![catalog(MARKETPLACE, "private", &["creds"], json!({}))],
        subscriptions: vec![subscription("t", MARKETPLACE, "private", "op.v1", "op.v1")],
        csvs: vec![csv("t", "op.v1", &[], &[])],
        operator_groups: vec![operator_group("t", &["t"])],
        namespaces: vec![namespace("t", json!({}), json!({}))],
        secrets: vec![pull_secret(MARKETPLACE, "creds")],
        ..Default::default()
    })
}

/// The TLS server with the webhook's router, `connections` and `requests` limits, and (with
/// `client_ca`) client certificates required.
async fn start(connections: ConnectionLimits, requests: RequestLimits, client_ca: bool) -> Server {
    let dir = tempfile::tempdir().unwrap().keep();
    let certs = generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]).unwrap();
    olm_pullsecret_injector::commands::certs::write(&dir, &certs).unwrap();
    let tls = CertReloader::load(dir.join("tls.crt"), dir.join("tls.key")).unwrap();
    let roots = client_ca.then(|| ClientVerifier::load(dir.join("ca.crt"), None).unwrap());
    let world = world();
    let router = olm_pullsecret_injector::router(world.webhook(OnCopyFailure::Deny), requests);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(listener, tls.server_config(roots), router, connections, std::future::pending()));
    Server { addr, certs, _world: world }
}

impl Server {
    async fn connect(&self) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        self.connect_as(None).await
    }

    /// A TLS connection, presenting the server's own pair as a client certificate if asked.
    async fn connect_as(&self, client_cert: Option<&DevCerts>) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        self.tls_over(tcp, self.client_config(client_cert)).await
    }

    fn client_config(&self, client_cert: Option<&DevCerts>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pemfile::certs(&mut self.certs.ca_pem.as_bytes()).next().unwrap().unwrap()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match client_cert {
            None => builder.with_no_client_auth(),
            Some(certs) => {
                let chain = rustls_pemfile::certs(&mut certs.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
                let key = rustls_pemfile::private_key(&mut certs.key_pem.as_bytes()).unwrap().unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }

    async fn tls_over(
        &self,
        tcp: tokio::net::TcpStream,
        config: rustls::ClientConfig,
    ) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    }

    /// One review over a fresh connection: the status code and the time it took.
    async fn review(&self) -> (u16, Duration) {
        let started = Instant::now();
        let mut tls = self.connect().await.unwrap();
        let status = send_review(&mut tls).await;
        (status, started.elapsed())
    }
}

async fn send_review(tls: &mut TlsStream<tokio::net::TcpStream>) -> u16 {
    let owner = csv_owner("t", "op.v1");
    let body = review("Pod", "CREATE", "t", pod(&[owner], None));
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    status_of(tls).await
}

/// Reads the whole response (the server closes) and returns its status code, 0 for none.
async fn status_of(tls: &mut TlsStream<tokio::net::TcpStream>) -> u16 {
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Whether the server has closed the connection (EOF or an error) within `within`.
async fn closed_within(tls: &mut TlsStream<tokio::net::TcpStream>, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.2 plays a pod other
/// than the API server, which the tests' reviews come from: 127.0.0.1).
async fn connect_from(addr: SocketAddr, source: [u8; 4]) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

const ANOTHER_POD: [u8; 4] = [127, 0, 0, 2];

/// A field of /proc/self/status in KiB: VmHWM (the peak resident set) or VmRSS (now).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap()))
        .unwrap()
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn quick(header_read_timeout: Duration) -> ConnectionLimits {
    ConnectionLimits { header_read_timeout, ..ConnectionLimits::default() }
}

#[tokio::test]
async fn a_client_that_trickles_its_request_head_is_cut_off() {
    let server = start(quick(Duration::from_secs(1)), RequestLimits::default(), false).await;
    let mut tls = server.connect().await.unwrap();
    let started = Instant::now();
    let head = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    let trickle = async {
        for byte in head {
            if tls.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The head takes 7 s to trickle in; the server gives it 1 s.
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    assert!(closed_within(&mut tls, Duration::from_secs(1)).await, "still open after {:?}", started.elapsed());
    println!("a trickling client was cut off after {:?}", started.elapsed());

    // An idle keep-alive connection ends the same way.
    let mut idle = server.connect().await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await, "an idle connection stays open");
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_keep_a_real_review_out() {
    let server = start(ConnectionLimits::default(), RequestLimits::default(), false).await;
    // From one pod: past the per-address cap they are closed at once, the rest wait for their
    // handshake's timeout.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(connect_from(server.addr, ANOTHER_POD).await.unwrap());
    }
    let (status, took) = server.review().await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(2), "a real review took {took:?} behind 2,000 idle connections");
    println!("a review behind 2,000 idle connections took {took:?}");
    drop(idle);
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let limits = ConnectionLimits { max_connections: 8, ..ConnectionLimits::default() };
    let server = start(limits, RequestLimits::default(), false).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(server.connect().await.unwrap());
    }
    assert!(server.connect().await.is_err(), "the ninth connection is closed before its handshake");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.review().await.0, 200, "freed connections are available again");
}

#[tokio::test]
async fn bodies_are_bounded_in_size_and_time_and_reviews_in_flight_are_capped() {
    let requests = RequestLimits { body_timeout: Duration::from_secs(1), max_in_flight: 2, ..RequestLimits::default() };
    let server = start(ConnectionLimits::default(), requests, false).await;

    // Declared too large: refused before a byte is read.
    let mut tls = server.connect().await.unwrap();
    let head = "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8388608\r\nConnection: close\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_of(&mut tls).await, 400);

    // Two bodies trickling hold both review slots; a third review is turned away at once.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut tls = server.connect().await.unwrap();
        let head = "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{";
        tls.write_all(head.as_bytes()).await.unwrap();
        slow.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, took) = server.review().await;
    assert_eq!(status, 503, "past the cap of reviews in flight");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The trickled bodies run out of time (408) and free their slots.
    for mut tls in slow {
        assert_eq!(status_of(&mut tls).await, 408);
    }
    assert_eq!(server.review().await.0, 200);
}

/// 30 connections each stream an 8 MiB chunked body (no length to refuse it by): each is cut at
/// the body limit, so the process stays under the chart's memory limit (256 MiB).
#[tokio::test]
async fn thirty_streamed_eight_mib_bodies_stay_under_the_memory_limit() {
    let server = Arc::new(start(ConnectionLimits::default(), RequestLimits::default(), false).await);
    let chunk = vec![b' '; 64 * 1024];
    let mut senders = Vec::new();
    for _ in 0..30 {
        let (server, chunk) = (server.clone(), chunk.clone());
        senders.push(tokio::spawn(async move {
            let mut tls = server.connect().await.unwrap();
            let head =
                "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            tls.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..128 {
                let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if tls.write_all(&framed).await.is_err() {
                    break;
                }
            }
            let _ = tls.write_all(b"0\r\n\r\n").await;
            status_of(&mut tls).await
        }));
    }
    for sender in senders {
        let status = sender.await.unwrap();
        // Cut at the body limit (400), or refused before reading past the memory budget (503).
        assert!(status == 400 || status == 503 || status == 0, "{status}");
    }
    let peak = peak_rss_kib();
    println!("peak resident set with 30 streamed 8 MiB bodies: {} MiB", peak / 1024);
    assert!(peak < 256 * 1024, "peak RSS {peak} kB");
}

/// 200 clients each declare a 3 MiB review and send all of it but its last byte: bodies past
/// the memory budget (here 8 MiB) are refused before a byte of them is read, and a genuine review
/// still gets its answer.
#[tokio::test]
async fn two_hundred_held_bodies_stay_within_the_memory_budget_and_a_review_still_passes() {
    // The held bodies' time limit is out of the way: only the budget refuses here.
    let requests = RequestLimits {
        body_budget_bytes: 8 * 1024 * 1024,
        body_timeout: Duration::from_secs(60),
        ..RequestLimits::default()
    };
    let server = Arc::new(start(ConnectionLimits::default(), requests, false).await);
    let length = 3 * 1024 * 1024;
    // One body for every client: the test's own memory stays out of the figure.
    let body: Arc<[u8]> = vec![b' '; length - 1].into();
    let before = status_kib("VmRSS:");
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for _ in 0..200 {
        let (server, answered_tx, body) = (server.clone(), answered_tx.clone(), body.clone());
        held.push(tokio::spawn(async move {
            let mut tls = server.connect().await.unwrap();
            let head = format!("POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            // A refused body's answer comes while it is still being sent.
            let sent = tokio::time::timeout(Duration::from_secs(5), tls.write_all(&body)).await;
            if !matches!(sent, Ok(Ok(()))) {
                let _ = answered_tx.send(status_of(&mut tls).await);
                return None;
            }
            let mut buf = [0u8; 512];
            // Generous: other tests (and builds) share the cores.
            match tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await {
                // Answered (refused) at once.
                Ok(Ok(n)) if n > 0 => {
                    let status = String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1).map(str::to_string);
                    let _ = answered_tx.send(status.and_then(|s| s.parse().ok()).unwrap_or(0));
                    None
                }
                // Still read by the server: held, its last byte never sent.
                _ => Some(tls),
            }
        }));
    }
    drop(answered_tx);
    let mut holding = Vec::new();
    for task in held {
        holding.extend(task.await.unwrap());
    }
    let mut refused = Vec::new();
    while let Some(status) = answered.recv().await {
        refused.push(status);
    }
    let (status, took) = server.review().await;
    let grown = status_kib("VmRSS:").saturating_sub(before);
    println!(
        "200 held 3 MiB bodies: {} read, {} refused, resident set grew {} MiB (budget 8 MiB; the clients' TLS \
         state included); a genuine review took {took:?}",
        holding.len(),
        refused.len(),
        grown / 1024,
    );
    assert!(grown < 64 * 1024, "resident set grew {grown} KiB with 200 held bodies");
    assert_eq!(status, 200, "a genuine review within the budget");
    assert!(holding.len() <= 2, "only the budget's worth of bodies is read: {}", holding.len());
    assert!(refused.iter().all(|s| *s == 503 || *s == 0), "{refused:?}");
    assert!(refused.iter().filter(|s| **s == 503).count() >= 150, "{refused:?}");
    drop(holding);
}

/// One address cannot take every connection: past its cap its connections are closed at once,
/// while another address still connects.
/// A client that sends reviews on one keep-alive connection and never reads the answers: once
/// the server's writes stall for the write timeout the connection is ended, and what it held (here
/// the one connection its address may have) is free again.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    let limits =
        ConnectionLimits { write_timeout: Duration::from_secs(1), max_connections_per_peer: 1, ..Default::default() };
    let server = start(limits, RequestLimits::default(), false).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut tls = server.tls_over(tcp, server.client_config(None)).await.unwrap();
    let body = review("Pod", "CREATE", "t", pod(&[csv_owner("t", "op.v1")], None));
    let mut one = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    one.extend_from_slice(&body);
    let started = Instant::now();
    let mut sent = 0;
    // Until the buffers both ways are full and the writes stall (or the server has ended it).
    while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), tls.write_all(&one)).await {
        sent += 1;
    }
    println!("{sent} reviews sent without reading an answer; stalled after {:?}", started.elapsed());
    let (status, took) = server.review().await;
    assert_eq!(status, 200, "the stalled connection still holds its address's only slot");
    println!("a review from the same address passed {took:?} later");
    drop(tls);
}

#[tokio::test]
async fn connections_past_the_per_address_cap_are_closed_and_others_still_connect() {
    let limits = ConnectionLimits { max_connections_per_peer: 4, ..ConnectionLimits::default() };
    let server = start(limits, RequestLimits::default(), false).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(server.addr, ANOTHER_POD).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = connect_from(server.addr, ANOTHER_POD).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(1), fifth.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "the fifth connection of one address is closed at once");
    assert_eq!(server.review().await.0, 200, "another address is served");
    drop(held);
}

/// The admin port under 2,000 idle connections from one pod: the kubelet's probe (another
/// address) is still answered.
#[tokio::test]
async fn two_thousand_idle_admin_connections_do_not_keep_a_probe_out() {
    let readiness = olm_pullsecret_injector::serving::lifecycle::Readiness::default();
    let router = olm_pullsecret_injector::serving::admin::router(readiness);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnectionLimits::admin();
    tokio::spawn(olm_pullsecret_injector::serving::https::serve_plain(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    let mut idle = Vec::new();
    for _ in 0..2000 {
        if let Ok(conn) = connect_from(addr, ANOTHER_POD).await {
            idle.push(conn);
        }
    }
    let started = Instant::now();
    let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
    probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), probe.read_to_string(&mut response)).await.unwrap().unwrap();
    println!("a probe behind 2,000 idle admin connections took {:?}", started.elapsed());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Past the per-address cap they were closed at once; the first wait for the head timeout.
    let mut buf = [0u8; 1];
    let last = idle.last_mut().expect("connections");
    let closed = tokio::time::timeout(Duration::from_secs(1), last.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "an idle admin connection past the cap stays open");
    drop(idle);
}

#[tokio::test]
async fn with_a_client_ca_a_caller_without_a_certificate_is_refused() {
    let server = start(ConnectionLimits::default(), RequestLimits::default(), true).await;
    // TLS 1.3 reports a refused client certificate on the first read after the handshake.
    let refused = match server.connect().await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            status_of(&mut tls).await == 0
        }
    };
    assert!(refused, "a caller without a certificate got an answer");
    // A certificate signed by the CA (the test's serving pair is signed by it) is let in.
    let mut tls = server.connect_as(Some(&server.certs)).await.unwrap();
    assert_eq!(send_review(&mut tls).await, 200);
}
