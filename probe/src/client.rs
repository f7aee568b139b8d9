//! A bounded HTTP/1.0 GET of a hub's `/state`, for `check_fedhub` and the
//! collectd read plugin.
//!
//! Blocking, on a std `TcpStream`: no async runtime and no background thread
//! (the collectd plugin runs inside collectd's read threads), and every wait
//! is bounded: each step (connect, each read) by [`Limits::step`], the whole
//! exchange by [`Limits::total`], the response by [`Limits::max_response_bytes`].
//! HTTP/1.0 keeps the exchange simple: one request per connection, the server
//! closes it, the body is delimited by `Content-Length` or the close (chunked
//! bodies are decoded anyway, for proxies).
//!
//! Why not an HTTP client crate: ureq 3.2.1 was tried against the answers the
//! probes must explain. It reports a service that is not HTTP as "http parse
//! fail: invalid HTTP version", a connection closed with no answer and a body cut
//! short both as "Peer disconnected", and a refused connection and a failed read
//! both as plain I/O errors. Ops read these messages in Nagios and in collectd's
//! log, and the probes' tests check them word for word (`not an HTTP/1.x status
//! line: "SSH-2.0-OpenSSH_9.2"`, `the connection closed without a response`,
//! `cannot connect to ...`). Getting them from ureq takes its resolver,
//! connector and transport traits, which its documentation says do not follow
//! semver; and with a resolve or global timeout set, ureq resolves each name on
//! a new thread. So this small client stays, in one place.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::state::StateView;

/// Where a hub's `/state` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, starting with `/` (`/state` unless behind a prefix).
    pub path: String,
}

impl Target {
    /// `host:port` as written in a URL (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full URL, for messages.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

/// How long and how much a GET may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for the connection and for each read.
    pub step: Duration,
    /// Longest time for the whole exchange.
    pub total: Duration,
    /// The largest response accepted (headers and body); a bigger one is an error,
    /// not an allocation.
    pub max_response_bytes: usize,
    /// The `User-Agent` sent.
    pub user_agent: &'static str,
}

/// Why a GET gave no body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The host name did not resolve.
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// `host:port`.
        authority: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// No address accepted a connection (`TimedOut` when the wait ran out).
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request failed.
    #[error("{url}: {source}")]
    Send {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the response failed.
    #[error("{url}: {source}")]
    Receive {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// One wait (for the request to go out or for the next bytes) ran out:
    /// a hung or overloaded hub.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// [`Limits::step`].
        timeout: Duration,
    },
    /// The whole exchange took longer than [`Limits::total`].
    #[error("{url}: no complete response within {limit:?}")]
    Deadline {
        /// The URL.
        url: String,
        /// [`Limits::total`].
        limit: Duration,
    },
    /// The response is larger than [`Limits::max_response_bytes`].
    #[error("{url}: malformed response: larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// [`Limits::max_response_bytes`].
        limit: usize,
    },
    /// Not an HTTP response, or a truncated one.
    #[error("{url}: malformed response: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong, e.g. `not an HTTP/1.x status line: "hello"`.
        reason: String,
    },
    /// A response, but not 200.
    #[error("{url}: HTTP status {status} (expected 200)")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
}

impl FetchError {
    /// Whether a wait ran out (as opposed to the hub refusing or answering wrongly).
    pub fn is_timeout(&self) -> bool {
        match self {
            FetchError::Timeout { .. } | FetchError::Deadline { .. } => true,
            FetchError::Connect { source, .. } => {
                source.kind() == std::io::ErrorKind::TimedOut
                    || source.kind() == std::io::ErrorKind::WouldBlock
            }
            _ => false,
        }
    }
}

/// GETs `target` and returns the body of a 200 response.
pub fn get(target: &Target, limits: &Limits) -> Result<Vec<u8>, FetchError> {
    let started = Instant::now();
    let url = target.url();
    let authority = target.authority();
    // The wait allowed now: the step, cut to what is left of the total.
    let wait = || -> Result<(Duration, bool), FetchError> {
        let left = limits.total.saturating_sub(started.elapsed());
        if left.is_zero() {
            Err(FetchError::Deadline {
                url: url.clone(),
                limit: limits.total,
            })
        } else if left < limits.step {
            Ok((left, true))
        } else {
            Ok((limits.step, false))
        }
    };
    let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| FetchError::Resolve {
            host: target.host.clone(),
            authority: authority.clone(),
            source,
        })?
        .collect();
    if addresses.is_empty() {
        return Err(FetchError::Resolve {
            host: target.host.clone(),
            authority,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    let mut last_error = None;
    let mut stream = None;
    for address in &addresses {
        let (timeout, _) = wait()?;
        match TcpStream::connect_timeout(address, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(FetchError::Connect {
            authority,
            source: last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses")
            }),
        });
    };
    // A wait that ran out: the total's if it was the shorter, else the step's.
    let timed_out = |by_total: bool| {
        if by_total {
            FetchError::Deadline {
                url: url.clone(),
                limit: limits.total,
            }
        } else {
            FetchError::Timeout {
                url: url.clone(),
                timeout: limits.step,
            }
        }
    };
    let is_timeout = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };

    let (timeout, by_total) = wait()?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        target.path, limits.user_agent
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|source| {
            if is_timeout(&source) {
                timed_out(by_total)
            } else {
                FetchError::Send {
                    url: url.clone(),
                    source,
                }
            }
        })?;

    let mut response = Vec::with_capacity(8 * 1024);
    let mut buffer = [0u8; 16 * 1024];
    let mut head: Option<Head> = None;
    loop {
        let (timeout, by_total) = wait()?;
        let read = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.read(&mut buffer));
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(timed_out(by_total)),
            Err(source) => return Err(FetchError::Receive { url, source }),
        };
        let eof = n == 0;
        response.extend_from_slice(&buffer[..n]);
        if response.len() > limits.max_response_bytes {
            return Err(FetchError::TooLarge {
                url,
                limit: limits.max_response_bytes,
            });
        }
        if head.is_none() {
            head = parse_head(&response).map_err(|reason| FetchError::Malformed {
                url: url.clone(),
                reason,
            })?;
        }
        match &head {
            Some(h) => match h.body(&response[h.body_start..], eof) {
                Ok(Some(body)) if h.status == 200 => return Ok(body),
                Ok(Some(_)) => {
                    return Err(FetchError::Status {
                        url,
                        status: h.status,
                    })
                }
                Ok(None) if !eof => {}
                Ok(None) => {
                    return Err(FetchError::Malformed {
                        url,
                        reason: "the connection closed before the whole body arrived".into(),
                    })
                }
                Err(reason) => return Err(FetchError::Malformed { url, reason }),
            },
            None if eof => {
                return Err(FetchError::Malformed {
                    url,
                    reason: if response.is_empty() {
                        "the connection closed without a response".into()
                    } else {
                        "the connection closed before the end of the headers".into()
                    },
                })
            }
            None => {}
        }
    }
}

/// Reads a `/state` body. A body that is JSON but not an object reads as an
/// empty view (no `consumers`), so the caller reports what is missing; only a
/// body that is not JSON at all is an error.
pub fn parse_state(body: &[u8]) -> Result<StateView, serde_json::Error> {
    match serde_json::from_slice::<StateView>(body) {
        Ok(view) => Ok(view),
        Err(e) if e.is_data() => Ok(StateView::default()),
        Err(e) => Err(e),
    }
}

/// A response's status line and the headers that say where the body ends.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    body_start: usize,
    length: Option<usize>,
    chunked: bool,
}

impl Head {
    /// The whole body, `None` while more is expected (`eof`: nothing more comes).
    fn body(&self, body: &[u8], eof: bool) -> Result<Option<Vec<u8>>, String> {
        if self.chunked {
            // Decode only once the terminating chunk can be there.
            if eof || body.ends_with(b"0\r\n\r\n") {
                return decode_chunked(body);
            }
            return Ok(None);
        }
        match self.length {
            Some(n) if body.len() >= n => Ok(Some(body[..n].to_vec())),
            Some(_) => Ok(None),
            None if eof => Ok(Some(body.to_vec())),
            None => Ok(None),
        }
    }
}

/// Parses the status line and headers; `None` until they are complete.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, String> {
    let end = find(buffer, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(buffer, b"\n\n").map(|i| (i, i + 2)));
    let Some((header_end, body_start)) = end else {
        if buffer.len() > 64 * 1024 {
            return Err("no end of headers in the first 64 KiB".into());
        }
        // Say at once when the first line is there and is not HTTP: a
        // service that is not HTTP may never end its "headers".
        if let Some(line_end) = find(buffer, b"\n") {
            check_status_line(&String::from_utf8_lossy(&buffer[..line_end]))?;
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..header_end])
        .map_err(|_| "the headers are not UTF-8".to_string())?;
    let mut lines = head.lines();
    let status = check_status_line(lines.next().unwrap_or_default())?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    Ok(Some(Head {
        status,
        body_start,
        length,
        chunked,
    }))
}

/// The status code of an HTTP/1.x status line.
fn check_status_line(line: &str) -> Result<u16, String> {
    let line = line.trim_end_matches('\r');
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {line:?}"));
    }
    parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("no status code in {line:?}"))
}

/// Decodes a chunked body; `None` until the last chunk arrived.
fn decode_chunked(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(body, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[..line_end])
            .map_err(|_| "bad chunk size line".to_string())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let data_start = line_end + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        let Some(data_end) = data_start.checked_add(size) else {
            return Err("chunk size overflows".into());
        };
        if body.len() < data_end.saturating_add(2) {
            return Ok(None);
        }
        out.extend_from_slice(&body[data_start..data_end]);
        body = &body[data_end + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const LIMITS: Limits = Limits {
        step: Duration::from_millis(500),
        total: Duration::from_secs(2),
        max_response_bytes: 1024 * 1024,
        user_agent: "fedhub-probe-test",
    };

    fn target(addr: &str) -> Target {
        let (host, port) = addr.rsplit_once(':').unwrap();
        Target {
            host: host.into(),
            port: port.parse().unwrap(),
            path: "/state".into(),
        }
    }

    /// Parses a whole response as received up to the end of the stream
    /// (`None`: incomplete).
    fn parse(r: &[u8]) -> Result<Option<(u16, Vec<u8>)>, String> {
        let Some(head) = parse_head(r)? else {
            return Ok(None);
        };
        Ok(head
            .body(&r[head.body_start..], true)?
            .map(|b| (head.status, b)))
    }

    /// A complete response: status and body.
    #[derive(Debug)]
    struct Response {
        status: u16,
        body: Vec<u8>,
    }

    /// Parses a response that must be complete at the end of the stream.
    fn parse_response(r: &[u8]) -> Result<Response, String> {
        if r.is_empty() {
            return Err("the connection closed without a response".into());
        }
        match parse(r)? {
            Some((status, body)) => Ok(Response { status, body }),
            None => Err("the connection closed before the end".into()),
        }
    }

    #[test]
    fn responses_parse_with_length_without_length_and_chunked() {
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse(r), Ok(Some((200, b"{}".to_vec()))));
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{\"a\": 1}";
        assert_eq!(parse(r), Ok(Some((200, b"{\"a\": 1}".to_vec()))));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n1;x=y\r\n \r\n0\r\n\r\n";
        assert_eq!(parse(r), Ok(Some((200, b"{} ".to_vec()))));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}";
        assert_eq!(parse(r), Ok(None));
        let r = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(r), Ok(Some((404, vec![]))));
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n"), Ok(None));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.0 abc\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.0 200 OK\r\n\xff: x\r\n\r\n").is_err());
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse(r).is_err());
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert!(matches!(parse(r), Err(_) | Ok(None)));
    }

    #[test]
    fn parses_plain_chunked_and_bad_responses() {
        let ok = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"{}"[..]));
        let extra = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!(extra.body, b"{}");
        let no_length = parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\ndown").unwrap();
        assert_eq!(
            (no_length.status, no_length.body.as_slice()),
            (503, &b"down"[..])
        );
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, b"{\"a\":1}");
        let bare_newlines = parse_response(b"HTTP/1.0 200 OK\nServer: x\n\n{}").unwrap();
        assert_eq!(bare_newlines.body, b"{}");
        for bad in [
            &b""[..],
            b"garbage",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.0 abc\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn urls() {
        let t = Target {
            host: "::1".into(),
            port: 8940,
            path: "/state".into(),
        };
        assert_eq!(t.url(), "http://[::1]:8940/state");
        assert_eq!(t.authority(), "[::1]:8940");
        let t = Target {
            host: "hub.example".into(),
            port: 80,
            path: "/x/state".into(),
        };
        assert_eq!(t.to_string(), "http://hub.example:80/x/state");
    }

    /// Serves one connection with `response` (after reading the request).
    fn serve_once(response: &'static [u8], delay: Duration) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                std::thread::sleep(delay);
                let _ = s.write_all(response);
            }
        });
        target(&addr.to_string())
    }

    fn limits(step_ms: u64) -> Limits {
        Limits {
            step: Duration::from_millis(step_ms),
            total: Duration::from_millis(step_ms * 4),
            ..LIMITS
        }
    }

    #[test]
    fn a_real_socket_round_trip() {
        let hub = serve_once(
            b"HTTP/1.0 200 OK\r\n\r\n{\"consumers\": []}",
            Duration::ZERO,
        );
        assert_eq!(get(&hub, &LIMITS).unwrap(), b"{\"consumers\": []}");
        let hub = serve_once(b"HTTP/1.0 503 Unavailable\r\n\r\n", Duration::ZERO);
        let e = get(&hub, &LIMITS).unwrap_err();
        assert!(e.to_string().contains("HTTP status 503"), "{e}");
        let hub = serve_once(
            b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            Duration::ZERO,
        );
        let e = get(&hub, &LIMITS).unwrap_err();
        assert!(e.to_string().contains("closed before"), "{e}");
        let hub = serve_once(b"", Duration::ZERO);
        let e = get(&hub, &LIMITS).unwrap_err();
        assert!(e.to_string().contains("closed without a response"), "{e}");
        let hub = serve_once(b"hello\r\n\r\n", Duration::ZERO);
        let e = get(&hub, &LIMITS).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("/state: malformed response: not an HTTP/1.x status line: \"hello\""),
            "{e}"
        );
    }

    #[test]
    fn a_service_that_is_not_http_is_named_without_waiting() {
        // It sends one line and then waits for us: no end of headers ever comes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = target(&listener.local_addr().unwrap().to_string());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let started = Instant::now();
        let e = get(&hub, &limits(1000)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{e}");
        assert!(
            e.to_string()
                .contains("not an HTTP/1.x status line: \"SSH-2.0-OpenSSH_9.2\""),
            "{e}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_huge_body_is_refused_not_buffered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = target(&listener.local_addr().unwrap().to_string());
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                let chunk = vec![b' '; 64 * 1024];
                while s.write_all(&chunk).is_ok() {}
            }
        });
        let small = Limits {
            max_response_bytes: 256 * 1024,
            ..LIMITS
        };
        let e = get(&hub, &small).unwrap_err();
        assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
        assert!(e.to_string().ends_with("larger than 262144 bytes"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_quickly() {
        let hub = serve_once(b"", Duration::from_secs(3));
        let started = Instant::now();
        let e = get(&hub, &limits(200)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
        assert!(e.is_timeout());
        assert!(
            e.to_string().ends_with("/state: no answer within 200ms"),
            "{e}"
        );
        // With one budget for everything, the same wait is the whole exchange's.
        let hub = serve_once(b"", Duration::from_secs(3));
        let one = Limits {
            step: Duration::from_millis(200),
            total: Duration::from_millis(200),
            ..LIMITS
        };
        let e = get(&hub, &one).unwrap_err();
        assert!(e.is_timeout(), "{e}");
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hub = target(&format!("127.0.0.1:{port}"));
        let e = get(&hub, &limits(200)).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot connect to 127.0.0.1:"),
            "{e}"
        );
        assert!(!e.is_timeout());
    }

    #[test]
    fn state_bodies() {
        let view = parse_state(br#"{"consumers": [{"name": "C", "backlog": 3}]}"#).unwrap();
        assert_eq!(view.consumer("C").unwrap().backlog, Some(3));
        assert_eq!(parse_state(b"null").unwrap(), StateView::default());
        assert_eq!(parse_state(b"[1, 2]").unwrap().consumers, None);
        assert!(parse_state(b"<html>").is_err());
        assert!(parse_state(br#"{"consumers": ["#).is_err());
    }
}
