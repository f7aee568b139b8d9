//! Bad `[security]` input to the `fedhub` binary: a clear message naming the
//! input and what was expected, exit 2 when the hub cannot validate with it,
//! never a panic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fedhub_testkit::*;

/// `fedhub run --check -c FILE` with `security` as the `[security]` section.
fn check(dir: &Path, security: &str) -> (Option<i32>, String) {
    let config = dir.join("fedhub.toml");
    std::fs::write(
        &config,
        format!("[bus]\ninbound = \"\"\n[http]\nlisten = \"\"\n[security]\nvalidate_signatures = true\n{security}"),
    )
    .unwrap();
    let output = Command::new(fedhub_binary())
        .args(["run", "--check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code(), stderr)
}

#[test]
fn a_crl_that_cannot_be_parsed_or_fetched_stops_the_hub_naming_it() {
    let pki = TestPki::new();
    let garbage = pki.dir().join("garbage-crl.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let (code, stderr) = check(
        pki.dir(),
        &format!(
            "ca_cert_location = \"{}\"\ncrl_location = \"{}\"\n",
            pki.ca().display(),
            garbage.display()
        ),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&garbage.display().to_string()) && stderr.contains("not a PEM X509 CRL"),
        "{stderr}"
    );
    // A URL nobody answers: named, after fedmsg's three attempts.
    let url = format!("http://127.0.0.1:{}/crl.pem", free_port());
    let (code, stderr) = check(
        pki.dir(),
        &format!(
            "ca_cert_location = \"{}\"\ncrl_location = \"{url}\"\n",
            pki.ca().display()
        ),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&url) && stderr.contains("cannot fetch the CRL"),
        "{stderr}"
    );
    // A scheme fedmsg does not fetch either.
    let (code, stderr) = check(
        pki.dir(),
        &format!(
            "ca_cert_location = \"{}\"\ncrl_location = \"ftp://example.org/crl.pem\"\n",
            pki.ca().display()
        ),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("crl_location") && stderr.contains("http(s) URL"),
        "{stderr}"
    );
}

#[test]
fn a_routing_policy_naming_bad_or_foreign_topics_is_reported_naming_the_topic() {
    let pki = TestPki::new();
    let ca = format!("ca_cert_location = \"{}\"\n", pki.ca().display());
    let (code, stderr) = check(
        pki.dir(),
        &format!("{ca}routing_policy = {{ \"org.fedoraproject.prod.bodhi.*\" = [\"bodhi\"] }}\n"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("routing_policy") && stderr.contains("org.fedoraproject.prod.bodhi.*"),
        "{stderr}"
    );

    // A topic outside the hub's topic prefix can never match: the running hub
    // warns, naming it and the prefix.
    let port = free_port();
    let config = pki.dir().join("running.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ninbound = \"\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[security]\nvalidate_signatures = true\n{ca}\
             routing_policy = {{ \"com.example.prod.thing.happened\" = [\"someone\"] }}\n"
        ),
    )
    .unwrap();
    let child = Command::new(fedhub_binary())
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_ok() && http_get(addr, "/health/livez").0 == 200
    }));
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("routing_policy names a topic outside the topic prefix"))
        .unwrap_or_else(|| panic!("no warning in {stderr}"));
    assert!(
        line.contains("com.example.prod.thing.happened") && line.contains("org.fedoraproject"),
        "{line}"
    );
}
