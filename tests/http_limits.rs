//! The HTTP server's limits against hostile clients, on real sockets: a slow
//! request head and a slow body are timed out, an oversized head or body is
//! refused before any handler reads it, and connections beyond
//! `[http] max_connections` wait until one closes. After each, the server
//! still answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fedhub::actix_web::{web, HttpResponse};
use fedhub::{
    Config, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes, HubBuilder,
    RunningHub,
};
use fedhub_testkit::*;

/// A consumer with one route, `POST /echo/body`, that reads the whole body.
struct Echo;

impl Consumer for Echo {
    fn consume(&mut self, _: &Envelope, _: &mut Context) -> Result<(), ConsumerError> {
        Ok(())
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        Some(std::sync::Arc::new(|cfg: &mut web::ServiceConfig| {
            cfg.route(
                "/body",
                web::post().to(|body: web::Bytes| async move {
                    HttpResponse::Ok().body(format!("{} bytes", body.len()))
                }),
            );
        }))
    }
}

fn hub(tweak: impl FnOnce(&mut Config)) -> (RunningHub, SocketAddr) {
    let bus = TestBus::new();
    let mut config = config(&bus);
    tweak(&mut config);
    let echo = ConsumerFactory::new("Echo", |_| Ok(Box::new(Echo)))
        .enabled_by_default()
        .http_prefix("/echo");
    let hub = HubBuilder::new(config).consumer(echo).start().unwrap();
    let addr = hub.http_addr().unwrap();
    (hub, addr)
}

/// Sends `request` (perhaps incomplete), then reads until the server closes
/// or `limit` passes; returns what came and how long it took.
fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let began = Instant::now();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    (
        String::from_utf8_lossy(&response).into_owned(),
        began.elapsed(),
    )
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn rejected(addr: SocketAddr, reason: &str) -> u64 {
    let (_, state) = http_get(addr, "/state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    state["http"]["requests_rejected_total"][reason]
        .as_u64()
        .unwrap()
}

#[test]
fn a_slow_request_head_gets_408_and_is_disconnected() {
    let (hub, addr) = hub(|c| c.http.request_head_timeout_secs = 1);
    // Headers trickling in, never finished.
    let (response, took) = exchange(
        addr,
        b"GET /state HTTP/1.1\r\nHost: test\r\nX-Slow: 1\r\n",
        Duration::from_secs(10),
    );
    assert!(
        status_line(&response).starts_with("HTTP/1.1 408"),
        "{response:?}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A connection that sends nothing at all.
    let (response, took) = exchange(addr, b"", Duration::from_secs(10));
    assert!(
        status_line(&response).starts_with("HTTP/1.1 408"),
        "{response:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(http_get(addr, "/health/livez").0, 200);
    hub.shutdown();
}

#[test]
fn a_slow_body_gets_408_naming_the_key_and_is_counted() {
    let (hub, addr) = hub(|c| c.http.request_timeout_secs = 1);
    let before = rejected(addr, "timeout");
    let (response, took) = exchange(
        addr,
        b"POST /echo/body HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nonly ten b",
        Duration::from_secs(10),
    );
    assert!(
        status_line(&response).starts_with("HTTP/1.1 408"),
        "{response:?}"
    );
    assert!(response.contains("request_timeout_secs"), "{response}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(rejected(addr, "timeout"), before + 1);
    // A body that arrives in time is read.
    let (response, _) = exchange(
        addr,
        b"POST /echo/body HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        Duration::from_secs(10),
    );
    assert!(response.ends_with("5 bytes"), "{response}");
    hub.shutdown();
}

#[test]
fn oversized_heads_and_bodies_are_refused_before_a_handler_reads_them() {
    let (hub, addr) = hub(|c| {
        c.http.max_head_bytes = 8192;
        c.http.max_body_bytes = 1024;
    });
    let head_before = rejected(addr, "head_too_large");
    let body_before = rejected(addr, "body_too_large");
    let big = "x".repeat(20_000);
    let (response, _) = exchange(
        addr,
        format!("GET /state HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );
    assert!(response.contains("max_head_bytes"), "{response}");
    assert_eq!(rejected(addr, "head_too_large"), head_before + 1);

    // The declared length is refused at once: the body is never sent.
    let (response, took) = exchange(
        addr,
        b"POST /echo/body HTTP/1.1\r\nHost: test\r\nContent-Length: 50000000\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        status_line(&response).starts_with("HTTP/1.1 413"),
        "{response:?}"
    );
    assert!(response.contains("max_body_bytes"), "{response}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(rejected(addr, "body_too_large"), body_before + 1);

    // A chunked body has no declared length: the extractor's limit cuts it.
    let chunk = "y".repeat(2000);
    let (response, _) = exchange(
        addr,
        format!(
            "POST /echo/body HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert!(
        status_line(&response).starts_with("HTTP/1.1 413"),
        "{response:?}"
    );
    assert_eq!(http_get(addr, "/health/livez").0, 200);
    hub.shutdown();
}

#[test]
fn connections_beyond_max_connections_wait_until_one_closes() {
    let (hub, addr) = hub(|c| {
        c.http.max_connections = 3;
        c.http.request_head_timeout_secs = 30;
    });
    // Three idle connections take every slot (give the server a moment to
    // accept each one).
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            stream
        })
        .collect();
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting
        .write_all(b"GET /health/livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut first = [0u8; 64];
    let early = waiting.read(&mut first);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served beyond max_connections: {early:?}"
    );
    drop(idle);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    waiting.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        status_line(&response).starts_with("HTTP/1.1 200"),
        "{response}"
    );
    hub.shutdown();
}

#[test]
fn limits_that_make_no_sense_are_refused_naming_the_key() {
    for (toml, key) in [
        ("[http]\nmax_connections = 0\n", "max_connections"),
        ("[http]\nmax_head_bytes = 500000\n", "max_head_bytes"),
        ("[http]\nrequest_timeout_secs = 0\n", "request_timeout_secs"),
        ("[http]\nmax_body_bytes = 0\n", "max_body_bytes"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedhub.toml");
        std::fs::write(&path, toml).unwrap();
        let error = Config::load_with_env(Some(&path), Some(Default::default()))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("[http] {key}")), "{toml}: {error}");
    }
}
