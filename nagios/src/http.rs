//! A minimal HTTP/1.0 GET over `std::net::TcpStream`: enough to read the hub's
//! `/state`, with every step bounded by one deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Larger responses are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Where to send the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, starting with `/`.
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

    /// The full URL, for messages.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path)
    }
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why no response was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The deadline passed.
    Timeout,
    /// Anything else: a sentence naming the host and what failed.
    Failed(String),
}

impl From<String> for HttpError {
    fn from(message: String) -> HttpError {
        HttpError::Failed(message)
    }
}

fn left(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HttpError::Timeout)
    } else {
        Ok(left)
    }
}

/// Sends `GET target.path` and reads the whole response before `deadline`.
pub fn get(target: &Target, deadline: Instant) -> Result<Response, HttpError> {
    let authority = target.authority();
    let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{}': {e}", target.host))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("cannot resolve '{}': no addresses", target.host).into());
    }
    let mut last_error = String::new();
    let mut stream = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, left(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(HttpError::Timeout),
            Err(e) => last_error = e.to_string(),
        }
    }
    let mut stream =
        stream.ok_or_else(|| format!("cannot connect to the hub at {authority}: {last_error}"))?;
    let io = |what: &str, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Failed(format!("cannot {what} {}: {e}", target.url())),
    };
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(|e| io("configure the connection to", e))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: check_fedhub/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        target.path,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("send the request to", e))?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| io("configure the connection to", e))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buffer[..n]);
                if raw.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "the response from {} is larger than {MAX_RESPONSE_BYTES} bytes",
                        target.url()
                    )
                    .into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("read the response from", e)),
        }
    }
    parse_response(&raw)
        .map_err(|e| HttpError::Failed(format!("bad HTTP response from {}: {e}", target.url())))
}

/// Parses a complete HTTP/1.x response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    if raw.is_empty() {
        return Err("the connection closed without a response".into());
    }
    let (head, body) = split_head(raw).ok_or("the headers never ended")?;
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.trim().eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        if body.len() < length {
            return Err(format!(
                "the body ended after {} of {length} bytes",
                body.len()
            ));
        }
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((&raw[..i], &raw[i + 4..]));
    }
    raw.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (&raw[..i], &raw[i + 2..]))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line never ended")?;
        let line = String::from_utf8_lossy(&rest[..end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size {
            return Err("a chunk was cut short".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = Target {
            host: "hub.example".into(),
            port: 80,
            path: "/x/state".into(),
        };
        assert_eq!(t.url(), "http://hub.example:80/x/state");
    }
}
