//! A throwaway PKI made with the `openssl` command for each test that needs
//! one: a CA, leaf certificates with their keys, a revoked one, an expired one,
//! a CA nobody trusts, and CRLs (current and expired). Nothing here is kept.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and its certificates in a temporary directory (removed on drop).
pub struct TestPki {
    dir: tempfile::TempDir,
}

fn openssl() -> PathBuf {
    crate::find_program(
        "openssl",
        &["/usr/bin/openssl"],
        "apt-get install openssl (scripts/test.sh does)",
    )
}

fn run(dir: &Path, args: &[&str]) {
    let output = Command::new(openssl())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The CA's `openssl ca` configuration.
const CA_CONFIG: &str = "[ca]
default_ca = test
[test]
dir = .
database = ./index.txt
new_certs_dir = ./issued
serial = ./serial
crlnumber = ./crlnumber
certificate = ./ca.crt
private_key = ./ca.key
default_md = sha256
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
";

impl TestPki {
    /// A new CA (`CN=fedhub-test-ca`, RSA-2048) with an empty CRL.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("issued")).unwrap();
        std::fs::write(path.join("index.txt"), "").unwrap();
        std::fs::write(path.join("serial"), "1000\n").unwrap();
        std::fs::write(path.join("crlnumber"), "01\n").unwrap();
        std::fs::write(path.join("ca.cnf"), CA_CONFIG).unwrap();
        run(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-sha256",
                "-subj",
                "/CN=fedhub-test-ca",
            ],
        );
        let pki = TestPki { dir };
        pki.write_crl("crl.pem");
        pki
    }

    /// The directory (also fedmsg's `ssldir`: `<name>.crt` and `<name>.key`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca.crt`.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// `crl.pem`: the current CRL (rewritten by [`revoke`](Self::revoke)).
    pub fn crl(&self) -> PathBuf {
        self.dir().join("crl.pem")
    }

    /// Issues `<name>.crt`/`<name>.key` with `CN=<name>`, valid for a year.
    pub fn issue(&self, name: &str) -> PathBuf {
        self.issue_with(name, &["-days", "365"])
    }

    /// Issues a certificate that expired in 2021.
    pub fn issue_expired(&self, name: &str) -> PathBuf {
        self.issue_with(
            name,
            &[
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
            ],
        )
    }

    fn issue_with(&self, name: &str, validity: &[&str]) -> PathBuf {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let subject = format!("/CN={name}");
        run(
            self.dir(),
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ],
        );
        let mut args = vec![
            "ca", "-batch", "-config", "ca.cnf", "-notext", "-in", &csr, "-out", &crt,
        ];
        args.extend_from_slice(validity);
        run(self.dir(), &args);
        self.dir().join(crt)
    }

    /// Revokes `<name>.crt` and rewrites `crl.pem`.
    pub fn revoke(&self, name: &str) {
        let crt = format!("{name}.crt");
        run(self.dir(), &["ca", "-config", "ca.cnf", "-revoke", &crt]);
        self.write_crl("crl.pem");
    }

    /// Writes a CRL valid for 30 days to `file`.
    pub fn write_crl(&self, file: &str) -> PathBuf {
        run(
            self.dir(),
            &["ca", "-config", "ca.cnf", "-gencrl", "-out", file],
        );
        self.dir().join(file)
    }

    /// Writes a CRL whose next update has passed (valid for one second, then waited out).
    pub fn write_expired_crl(&self, file: &str) -> PathBuf {
        run(
            self.dir(),
            &[
                "ca", "-config", "ca.cnf", "-gencrl", "-crlsec", "1", "-out", file,
            ],
        );
        std::thread::sleep(std::time::Duration::from_millis(2100));
        self.dir().join(file)
    }

    /// A self-signed certificate and key `<name>.crt`/`.key` that no CA issued.
    pub fn self_signed(&self, name: &str) -> PathBuf {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let subject = format!("/CN={name}");
        run(
            self.dir(),
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt,
                "-days", "365", "-subj", &subject,
            ],
        );
        self.dir().join(crt)
    }
}

impl Default for TestPki {
    fn default() -> TestPki {
        TestPki::new()
    }
}
