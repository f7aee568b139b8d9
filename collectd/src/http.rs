//! A minimal HTTP/1.0 GET over `std::net::TcpStream`, with timeouts.
//!
//! The plugin runs inside collectd's read threads: no async runtime, no
//! background threads, and every wait is bounded, so a hung hub costs collectd
//! at most a few timeouts per read, never a blocked read thread. HTTP/1.0 keeps
//! the exchange simple: one request per connection, the server closes it, and
//! the body is not chunked (chunked bodies are decoded anyway, for proxies).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest response accepted; a bigger one is an error, not an allocation.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Where the hub's `/state` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    authority: String,
    path: String,
}

impl HubAddress {
    /// Parses `host:port`, `[v6]:port`, or `http://host:port[/base]` (the state
    /// document is then `<base>/state`).
    pub fn parse(text: &str) -> Result<HubAddress, String> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "scheme {scheme:?} is not supported: expected host:port or http://host:port"
                ))
            }
            None => text,
        };
        let (authority, base) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| "expected host:port (the hub's [http] listen address)".to_string())?;
        if host.is_empty() || host == "[]" {
            return Err("the host is empty".into());
        }
        if host.contains(char::is_whitespace) || host.contains('@') {
            return Err(format!("{host:?} is not a host name or address"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("{port:?} is not a port (1-65535)")),
        }
        if base.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("the path must not contain spaces".into());
        }
        let path = format!("{}/state", base.trim_end_matches('/'));
        Ok(HubAddress {
            authority: authority.to_string(),
            path,
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request path, `/state` unless a base path was given.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for HubAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The host name did not resolve.
    #[error("cannot resolve {authority}: {reason}")]
    Resolve {
        /// `host:port`.
        authority: String,
        /// The resolver's message.
        reason: String,
    },
    /// No address accepted a connection in time.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The last connection error.
        source: std::io::Error,
    },
    /// Sending the request or reading the response failed or timed out.
    #[error("{url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The I/O error (`WouldBlock`/`TimedOut` for timeouts).
        source: std::io::Error,
    },
    /// Nothing arrived within the timeout (a hung or overloaded hub).
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The response took longer than the overall limit.
    #[error("{url}: no complete response within {limit:?}")]
    Deadline {
        /// The URL.
        url: String,
        /// The overall limit.
        limit: Duration,
    },
    /// Not a 200 response.
    #[error("{url}: HTTP status {status} (expected 200)")]
    Status {
        /// The URL.
        url: String,
        /// The status code (0 if unreadable).
        status: u16,
    },
    /// Not an HTTP response, or a truncated or oversized one.
    #[error("{url}: malformed response: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// GETs `address`, returning the body of a 200 response. `timeout` bounds the
/// connect and each read; the whole exchange is bounded by four times that.
pub fn get(address: &HubAddress, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let url = address.to_string();
    let limit = timeout * 4;
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = address
        .authority
        .to_socket_addrs()
        .map_err(|e| FetchError::Resolve {
            authority: address.authority.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let mut stream = stream.ok_or_else(|| FetchError::Connect {
        authority: address.authority.clone(),
        source: last_error,
    })?;
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => FetchError::Timeout {
            url: url.clone(),
            timeout,
        },
        _ => FetchError::Io {
            url: url.clone(),
            source,
        },
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: fedhub-collectd\r\n\r\n",
        address.path, address.authority
    );
    stream.write_all(request.as_bytes()).map_err(io)?;

    let mut response = Vec::with_capacity(8 * 1024);
    let mut buffer = [0u8; 16 * 1024];
    let mut head: Option<Head> = None;
    loop {
        if started.elapsed() > limit {
            return Err(FetchError::Deadline { url, limit });
        }
        let n = match stream.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        let eof = n == 0;
        response.extend_from_slice(&buffer[..n]);
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::Malformed {
                url,
                reason: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        if head.is_none() {
            head = parse_head(&response).map_err(|reason| FetchError::Malformed {
                url: url.clone(),
                reason,
            })?;
        }
        match &head {
            Some(h) => {
                let body = &response[h.body_start..];
                match h.body(body, eof) {
                    Ok(Some(body)) => return check_status(&url, h.status, body),
                    Ok(None) if !eof => {}
                    Ok(None) => {
                        return Err(FetchError::Malformed {
                            url,
                            reason: "the connection closed before the whole body arrived".into(),
                        })
                    }
                    Err(reason) => return Err(FetchError::Malformed { url, reason }),
                }
            }
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

fn check_status(url: &str, status: u16, body: Vec<u8>) -> Result<Vec<u8>, FetchError> {
    if status == 200 {
        Ok(body)
    } else {
        Err(FetchError::Status {
            url: url.to_string(),
            status,
        })
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
    let Some(header_end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() > 64 * 1024 {
            return Err("no end of headers in the first 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..header_end])
        .map_err(|_| "the headers are not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok(Some(Head {
        status,
        body_start: header_end + 4,
        length,
        chunked,
    }))
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

    #[test]
    fn addresses_parse() {
        let a = HubAddress::parse("127.0.0.1:8940").unwrap();
        assert_eq!((a.authority(), a.path()), ("127.0.0.1:8940", "/state"));
        let a = HubAddress::parse("http://[::1]:8940/").unwrap();
        assert_eq!((a.authority(), a.path()), ("[::1]:8940", "/state"));
        let a = HubAddress::parse("http://hub.example:80/x/y").unwrap();
        assert_eq!(a.to_string(), "http://hub.example:80/x/y/state");
        for bad in [
            "",
            "host",
            ":80",
            "h:0",
            "h:x",
            "ftp://h:1",
            "a b:1",
            "h:1/a b",
        ] {
            assert!(
                HubAddress::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    /// Parses a whole response as received up to the end of the stream.
    fn parse(r: &[u8]) -> Result<Option<(u16, Vec<u8>)>, String> {
        let Some(head) = parse_head(r)? else {
            return Ok(None);
        };
        Ok(head
            .body(&r[head.body_start..], true)?
            .map(|b| (head.status, b)))
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

    /// Serves one connection with `response` (after reading the request).
    fn serve_once(response: &'static [u8], delay: Duration) -> HubAddress {
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
        HubAddress::parse(&addr.to_string()).unwrap()
    }

    #[test]
    fn a_real_socket_round_trip() {
        let hub = serve_once(
            b"HTTP/1.0 200 OK\r\n\r\n{\"consumers\": []}",
            Duration::ZERO,
        );
        assert_eq!(
            get(&hub, Duration::from_millis(500)).unwrap(),
            b"{\"consumers\": []}"
        );
        let hub = serve_once(b"HTTP/1.0 503 Unavailable\r\n\r\n", Duration::ZERO);
        let e = get(&hub, Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("HTTP status 503"), "{e}");
        let hub = serve_once(
            b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            Duration::ZERO,
        );
        let e = get(&hub, Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("closed before"), "{e}");
        let hub = serve_once(b"", Duration::ZERO);
        let e = get(&hub, Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("closed without a response"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_quickly() {
        let hub = serve_once(b"", Duration::from_secs(3));
        let started = Instant::now();
        let e = get(&hub, Duration::from_millis(200)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
        assert!(
            e.to_string().ends_with("/state: no answer within 200ms"),
            "{e}"
        );
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hub = HubAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
        let e = get(&hub, Duration::from_millis(200)).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot connect to 127.0.0.1:"),
            "{e}"
        );
    }
}
