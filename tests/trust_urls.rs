//! The CA and CRL from http(s) URLs, as fedmsg allows: real HTTP and HTTPS
//! servers on 127.0.0.1 (Python's `http.server`, the HTTPS one with a
//! certificate from the test PKI), downloads at start and at each reload, and
//! a clear error naming the URL when one cannot be had.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fedhub::{
    to_canonical_string, RejectReason, Reloaded, SecurityConfig, SigningKey, Stats, TrustError,
    Validator,
};
use fedhub_testkit::*;
use serde_json::{json, Value};

/// A real HTTP(S) server serving `dir`, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Server {
        let script = workspace_root().join("tests/python/serve_dir.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(dir);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed(key: &SigningKey, topic: &str, i: u64) -> String {
    let mut map = json!({"topic": topic, "msg": {"n": i}, "i": i,
        "msg_id": format!("2026-00000000-0000-4000-8000-{i:012}"),
        "timestamp": 1_795_392_000u64 + i, "username": "tester"})
    .as_object()
    .unwrap()
    .clone();
    key.sign(&mut map).unwrap();
    to_canonical_string(&Value::Object(map))
}

fn key(pki: &TestPki, name: &str) -> SigningKey {
    pki.issue(name);
    SigningKey::from_files(
        &pki.dir().join(format!("{name}.key")),
        &pki.dir().join(format!("{name}.crt")),
        name,
    )
    .unwrap()
}

fn load(ca: String, crl: String) -> Result<Validator, TrustError> {
    let config = SecurityConfig {
        validate_signatures: true,
        ca_cert_location: ca,
        crl_location: crl,
        ..SecurityConfig::default()
    };
    Validator::load(&config, Stats::new().security().clone())
}

#[test]
fn the_ca_and_crl_come_from_http_urls_and_are_downloaded_again_on_reload() {
    let pki = TestPki::new();
    let alice = key(&pki, "alice");
    let topic = format!("{PREFIX}.logger.log");
    let mut server = Server::start(pki.dir(), None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let v = load(format!("{base}/ca.crt"), format!("{base}/crl.pem")).unwrap();
    assert_eq!(
        v.validate_body(&topic, signed(&alice, &topic, 1).as_bytes()),
        Ok(())
    );

    pki.revoke("alice");
    assert_eq!(v.reload().unwrap(), Reloaded::Changed);
    let rejection = v
        .validate_body(&topic, signed(&alice, &topic, 2).as_bytes())
        .unwrap_err();
    assert_eq!(rejection.reason, RejectReason::Revoked);

    // The server goes away: the reload fails naming the URL, the CRL loaded
    // before stays in use.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let error = v.reload().unwrap_err().to_string();
    assert!(error.contains(&format!("{base}/ca.crt")), "{error}");
    assert!(error.contains("cannot fetch the CA certificate"), "{error}");
    assert_eq!(v.stats().trust_reload_failures(), 1);
    let rejection = v
        .validate_body(&topic, signed(&alice, &topic, 3).as_bytes())
        .unwrap_err();
    assert_eq!(rejection.reason, RejectReason::Revoked);
}

#[test]
fn a_missing_or_unparsable_download_is_an_error_naming_the_url() {
    let pki = TestPki::new();
    std::fs::write(pki.dir().join("garbage.pem"), "not a CRL\n").unwrap();
    let server = Server::start(pki.dir(), None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let error = load(format!("{base}/ca.crt"), format!("{base}/no-such-crl.pem"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("{base}/no-such-crl.pem")) && error.contains("HTTP 404"),
        "{error}"
    );
    let error = load(format!("{base}/ca.crt"), format!("{base}/garbage.pem"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("{base}/garbage.pem")) && error.contains("not a PEM X509 CRL"),
        "{error}"
    );
}

#[test]
fn the_ca_and_crl_come_from_an_https_url_checked_against_the_trusted_roots() {
    let pki = TestPki::new();
    let alice = key(&pki, "alice");
    // The server's certificate, issued by the test CA for the name in the URL.
    pki.issue("localhost");
    let server = Server::start(
        pki.dir(),
        Some((
            &pki.dir().join("localhost.crt"),
            &pki.dir().join("localhost.key"),
        )),
    );
    let base = format!("https://localhost:{}", server.port);
    // Untrusted until the test CA is among the roots (OpenSSL reads
    // SSL_CERT_FILE; it is set in this process only after this first try).
    let error = load(format!("{base}/ca.crt"), String::new())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(&format!("{base}/ca.crt")), "{error}");
    std::env::set_var("SSL_CERT_FILE", pki.ca());
    let v = load(format!("{base}/ca.crt"), format!("{base}/crl.pem")).unwrap();
    let topic = format!("{PREFIX}.logger.log");
    assert_eq!(
        v.validate_body(&topic, signed(&alice, &topic, 1).as_bytes()),
        Ok(())
    );
}
