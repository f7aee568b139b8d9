//! Small readers shared by the tools: `/proc/PID/status` memory, `/proc` CPU
//! time (per process and per thread), and a plain HTTP/1.1 GET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Memory of a process, from `/proc/PID/status`, in kB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kb: u64,
    /// Peak resident set size (high-water mark).
    pub hwm_kb: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`; `None` when the process is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut memory = Memory::default();
    for line in status.lines() {
        let kb = |rest: &str| {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            memory.rss_kb = kb(rest);
        } else if let Some(rest) = line.strip_prefix("VmHWM:") {
            memory.hwm_kb = kb(rest);
        }
    }
    Some(memory)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// `(command name, utime + stime in seconds)` from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3 of stat(5); utime and stime are 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / clock_ticks()))
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, s)| s)
}

/// CPU seconds used so far by each thread of `pid`, as `(tid, name, seconds)`.
pub fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let mut threads = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((name, seconds)) = stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")) {
            threads.push((tid, name, seconds));
        }
    }
    threads.sort_by_key(|t| t.0);
    threads
}

/// CPU seconds each thread of `pid` used between two [`thread_cpu`] readings,
/// labelled by thread name; the main thread is `main`, and threads sharing a
/// name (libzmq's unnamed I/O threads inherit the process name) get `#2`, `#3`
/// in thread-id order. Threads that used (almost) nothing are left out.
pub fn thread_cpu_delta(
    pid: u32,
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (tid, name, seconds) in after {
        let was = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map(|(_, _, s)| *s)
            .unwrap_or(0.0);
        let label = if *tid == pid {
            "main".to_string()
        } else {
            let k = seen.entry(name.clone()).or_insert(0);
            *k += 1;
            if *k == 1 {
                name.clone()
            } else {
                format!("{name}#{k}")
            }
        };
        let used = seconds - was;
        if used >= 0.005 {
            out.insert(label, crate::round(used, 3));
        }
    }
    out
}

/// Whether `pid` is running (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// GETs `path` from `host:port` and returns the body of a 200 response.
/// One connection per request (`Connection: close`): simple, and cheap on loopback.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<String> {
    let socket_addr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let mut stream = TcpStream::connect_timeout(&socket_addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::with_capacity(4096);
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of HTTP headers")
    })?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!(
            "GET {path}: HTTP status {status}"
        )));
    }
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Strips a `http://` prefix and any path: `http://127.0.0.1:8940/` -> `127.0.0.1:8940`.
pub fn host_port(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let memory = memory(pid).unwrap();
        assert!(memory.rss_kb > 0 && memory.hwm_kb >= memory.rss_kb);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(!thread_cpu(pid).is_empty());
        assert!(alive(pid));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(host_port("http://127.0.0.1:1/state"), "127.0.0.1:1");
    }
}
