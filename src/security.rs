//! Trust at the door: fedmsg's x509 message signatures, checked on the decoding
//! thread before any consumer sees a message (`[security] validate_signatures`),
//! and made byte for byte as fedmsg's `sign` makes them when the hub publishes
//! (`[security] sign_messages`, [`SigningKey`]).
//!
//! # Validation, in fedmsg 1.1.7's order
//!
//! `FedmsgConsumer.validate` and `fedmsg.crypto.validate` (x509_ng), step by
//! step; the first step that fails names the rejection's reason:
//!
//! 1. The topic frame equals the body's `topic` (fedmsg checks this before any
//!    cryptography; fedhub's decoder does it for every message) — `topic_mismatch`.
//! 2. The backend: `crypto` must be `x509` (or, when absent, a `certificate`
//!    must be present) and allowed by `crypto_validate_backends` — `unsigned`.
//! 3. `signature` and `certificate` present — `unsigned`; strings that decode
//!    as base64 (leniently, as Python's `b64decode`: characters outside the
//!    alphabet, such as the newlines fedmsg wraps with, are skipped) —
//!    `bad_signature` or `untrusted_certificate`.
//! 4. The certificate is PEM, issued by the CA of `ca_cert_location` (its first
//!    certificate) and, with `crl_location`, checked against the CRL with
//!    OpenSSL's `CRL_CHECK | CRL_CHECK_ALL`, exactly as pyOpenSSL's
//!    `X509StoreContext` does it for fedmsg — `revoked`; `expired` for a
//!    certificate or CRL outside its validity (an expired CRL fails every
//!    message, as in fedmsg); `untrusted_certificate` for anything else.
//! 5. The PKCS#1 v1.5 SHA-1 RSA signature over the canonical JSON of the body
//!    without `signature` and `certificate` — `bad_signature`.
//! 6. `routing_policy` and `routing_nitpicky` on the certificate's first CN —
//!    `policy`.
//!
//! # Per certificate, not per message
//!
//! Every message carries its signer's certificate, and a hub sees few distinct
//! ones. Parsing it, checking the chain and the CRL are done once per distinct
//! certificate and cached with the verdict (the signer's public key and CN, or
//! the rejection); only base64 decoding, canonical JSON and one RSA verification
//! run per message. Each validating thread also remembers the last few trusted
//! certificates it saw (compared in full), so most messages neither take the
//! cache's lock nor hash their certificate's text; the signature is checked
//! with `RSA_verify` on the SHA-1 digest, without a digest context per message.
//! A trusted verdict is checked again when the certificate or the CRL expires
//! (at the latest after an hour), a rejection after a minute; the cache holds
//! at most [`MAX_CACHED_CERTIFICATES`] and is emptied when full, so a flood of
//! distinct forged certificates costs CPU, not memory.
//!
//! # Loading the CA and CRL again
//!
//! Unlike fedmsg, a rejected certificate never reloads the CA and CRL (fedmsg
//! reloads them for every message from a revoked certificate, a network fetch
//! when the location is a URL). They are read from a file or downloaded from
//! an http(s) URL (3 attempts of at most 30 s, as fedmsg's `requests`; TLS
//! through OpenSSL, checked against the system's roots) when the hub starts
//! (a CA or CRL that cannot be had or parsed stops it, naming the file or
//! URL), then again by
//! the [`TrustReloader`] every `crl_cache_expiry` seconds (0: never) and on
//! each reload request of the hub (SIGHUP). A reload that reads the same bytes
//! keeps the cached verdicts; one that reads something new starts them over.
//!
//! What fedmsg does with a CRL that is expired or cannot be had, and what
//! fedhub does:
//!
//! - An **expired** CRL (past its `nextUpdate`) fails every message, in both
//!   (OpenSSL's `X509_V_ERR_CRL_HAS_EXPIRED`): reason `expired`. Cached
//!   verdicts end when the CRL expires, so this starts on time.
//! - An **unreadable** CRL (missing, unreachable, not PEM): fedmsg catches the
//!   error inside `validate`, reloads once more and rejects the message, so
//!   every message is rejected while it lasts. fedhub refuses to start with it
//!   (exit 2, naming the file); at a reload it keeps the CA and CRL it had,
//!   logs a warning, counts `fedhub_security_trust_reload_failures_total` and
//!   shows the error in `/state` (`validation.trust_reload_error`) until a
//!   reload succeeds. The CRL kept still expires at its `nextUpdate`, after
//!   which every message is rejected as fedmsg would: a stale CRL is never
//!   trusted for longer than its issuer said.
//!
//! # Why OpenSSL (the `openssl` crate)
//!
//! fedmsg's trust decisions are OpenSSL's: pyOpenSSL's `X509Store` and
//! `X509StoreContext` are thin wrappers over `X509_verify_cert`, and
//! `cryptography` verifies the signature with OpenSSL too. Binding the same
//! library gives the same answers on the details that matter here (CRL flags,
//! validity dates, which CRL errors fail), accepts what fedmsg's deployments
//! actually have (RSA-1024 keys, SHA-1 signatures, SHA-1- and MD5-signed CA
//! material) and signs with PKCS#1 v1.5 SHA-1. The pure-Rust alternatives
//! refuse parts of that: ring verifies PKCS#1 SHA-1 only for 2048-bit keys and
//! up and cannot sign with SHA-1, and webpki checks chains for the TLS profile.
//! The `openssl` crate is the maintained binding (rust-openssl), linked against
//! the distribution's libssl, which gets its security updates.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use foreign_types::ForeignTypeRef;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder, X509StoreBuilderRef};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509CrlRef, X509StoreContext, X509};

use crate::canonical::{signed_body, Field};
use crate::config::SecurityConfig;
use crate::message::Envelope;
use crate::stats::SecurityStats;

/// Distinct certificates whose verdicts are kept; the cache is emptied when full.
pub const MAX_CACHED_CERTIFICATES: usize = 4096;
/// A trusted certificate is checked again after this long at the latest.
const TRUSTED_RECHECK: Duration = Duration::from_secs(3600);
/// A rejected certificate is checked again after this long.
const REJECTED_RECHECK: Duration = Duration::from_secs(60);

/// Why validation rejected a message: the `reason` label of
/// `fedhub_messages_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No x509 signature: no `signature`/`certificate`, or a backend that is
    /// not allowed (`crypto` other than `x509`).
    Unsigned,
    /// The signature is not base64, or does not match the message.
    BadSignature,
    /// The certificate is not base64 PEM, has no CN or no RSA key, or was not
    /// issued by the CA.
    UntrustedCertificate,
    /// The certificate is on the CRL.
    Revoked,
    /// The certificate, or the CRL, is outside its validity period.
    Expired,
    /// `routing_policy` / `routing_nitpicky` do not allow the signer on the topic.
    Policy,
    /// The topic frame differs from the body's `topic`.
    TopicMismatch,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Unsigned,
        RejectReason::BadSignature,
        RejectReason::UntrustedCertificate,
        RejectReason::Revoked,
        RejectReason::Expired,
        RejectReason::Policy,
        RejectReason::TopicMismatch,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unsigned => "unsigned",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UntrustedCertificate => "untrusted_certificate",
            RejectReason::Revoked => "revoked",
            RejectReason::Expired => "expired",
            RejectReason::Policy => "policy",
            RejectReason::TopicMismatch => "topic_mismatch",
        }
    }
}

/// A message validation rejected: why, who signed it (when known) and what failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The reason label.
    pub reason: RejectReason,
    /// The CN of the signer's certificate, when it could be read.
    pub signer: Option<Arc<str>>,
    /// What failed, in words.
    pub detail: Cow<'static, str>,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            reason,
            signer: None,
            detail: detail.into(),
        }
    }

    fn by(mut self, signer: Option<&Arc<str>>) -> Rejection {
        self.signer = signer.cloned();
        self
    }
}

/// Why the CA, the CRL or a signing key could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read.
    #[error("cannot read the {what} {}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A CA or CRL URL could not be downloaded.
    #[error("cannot fetch the {what} {url}: {detail}")]
    Fetch {
        /// What the URL should hold.
        what: &'static str,
        /// The URL.
        url: String,
        /// What went wrong (the HTTP status, or the connection's error).
        detail: String,
    },
    /// The file holds no PEM object of the expected kind.
    #[error("the {what} {} is not a PEM {expected}", path.display())]
    Parse {
        /// What the file should hold.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The PEM type expected.
        expected: &'static str,
        /// OpenSSL's error.
        #[source]
        source: ErrorStack,
    },
    /// `certnames` has no entry for the cert index.
    #[error("[security] certnames has no entry for {index:?} (the cert index: {how})")]
    NoCertname {
        /// The cert index looked up.
        index: String,
        /// How it was formed.
        how: &'static str,
    },
    /// The signing key and certificate do not belong together, or the key is not RSA.
    #[error("the signing key {} {problem}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// OpenSSL failed to build the certificate store.
    #[error("cannot build the certificate store")]
    Store(#[source] ErrorStack),
}

/// A certificate that passed the chain and CRL checks: what each message needs.
struct TrustedSigner {
    key: Rsa<Public>,
    cn: Arc<str>,
}

impl TrustedSigner {
    /// Whether `signature` is the PKCS#1 v1.5 SHA-1 RSA signature of
    /// `signed` by this signer (what `EVP_DigestVerify` with SHA-1 and
    /// PKCS#1 padding checks, without setting up a digest context per message).
    fn verifies(&self, signature: &[u8], signed: &[u8]) -> bool {
        let digest = openssl::sha::sha1(signed);
        let Ok(length) = std::os::raw::c_uint::try_from(signature.len()) else {
            return false;
        };
        // SAFETY: the digest and the signature are valid for the lengths
        // given, and the key is a valid RSA key for the duration of the call
        // (RSA_verify only reads it, and is safe to call from several threads).
        let verified = unsafe {
            openssl_sys::RSA_verify(
                openssl_sys::NID_sha1,
                digest.as_ptr(),
                digest.len() as std::os::raw::c_uint,
                signature.as_ptr(),
                length,
                self.key.as_ptr(),
            )
        };
        if verified != 1 {
            // A mismatch leaves errors on this thread's queue: clear them.
            drop(ErrorStack::get());
        }
        verified == 1
    }
}

type Verdicts = HashMap<Box<str>, Verdict>;

/// Tells loaded [`Trust`]s apart (a thread's last signer belongs to one).
static TRUST_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Trusted signers a validating thread saw last: a hub hears few signers,
/// so most messages find their certificate among these, compared in full
/// (texts that differ mostly differ in their first bytes), without taking
/// the cache's lock or hashing a text of kilobytes.
struct LastSigner {
    /// The [`Trust::generation`] the verdict was reached under.
    generation: u64,
    certificate: Box<str>,
    signer: Arc<TrustedSigner>,
    recheck_at: Instant,
}

/// How many [`LastSigner`]s each validating thread keeps.
const LAST_SIGNERS: usize = 8;

thread_local! {
    static LAST_SIGNERS_SEEN: RefCell<Vec<LastSigner>> = const { RefCell::new(Vec::new()) };
}

/// A cached verdict on one certificate.
struct Verdict {
    outcome: Result<Arc<TrustedSigner>, Rejection>,
    recheck_at: Instant,
}

/// The CA and CRL as loaded, and the verdicts reached against them.
struct Trust {
    /// Unique to this load (see [`LastSigner`]).
    generation: u64,
    store: X509Store,
    /// When the CRL stops being valid (verdicts are checked again then).
    crl_deadline: Option<Instant>,
    verdicts: Mutex<Verdicts>,
    /// The CA's and the CRL's bytes as read: a reload that reads the same
    /// keeps the verdicts.
    source: (Vec<u8>, Option<Vec<u8>>),
}

/// Reads a file, naming it on failure.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|source| TrustError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The most a CA or CRL download may hold (Fedora's CRL is a few kilobytes).
pub const MAX_TRUST_DOWNLOAD_BYTES: u64 = 16 << 20;
/// Attempts at a download, as fedmsg's `requests` session (3 retries).
const DOWNLOAD_ATTEMPTS: u32 = 3;
/// The time limit of one download attempt, fedmsg's 30 s.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a CA or CRL location: an `http://` or `https://` URL (downloaded,
/// as fedmsg does with `requests`) or a local file.
fn fetch(what: &'static str, location: &str) -> Result<Vec<u8>, TrustError> {
    if !(location.starts_with("https://") || location.starts_with("http://")) {
        return read(what, Path::new(location));
    }
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(DOWNLOAD_TIMEOUT))
        .tls_config(tls)
        .build()
        .into();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = agent.get(location).call().and_then(|mut response| {
            response
                .body_mut()
                .with_config()
                .limit(MAX_TRUST_DOWNLOAD_BYTES)
                .read_to_vec()
        });
        match outcome {
            Ok(bytes) => return Ok(bytes),
            // An answer such as 404 will not change on a retry.
            Err(ureq::Error::StatusCode(status)) => {
                return Err(TrustError::Fetch {
                    what,
                    url: location.to_string(),
                    detail: format!("the server answered HTTP {status}"),
                })
            }
            Err(error) if attempt >= DOWNLOAD_ATTEMPTS => {
                return Err(TrustError::Fetch {
                    what,
                    url: location.to_string(),
                    detail: format!("{error} (after {attempt} attempts)"),
                })
            }
            Err(error) => {
                tracing::debug!(url = location, attempt, error = %error, "download failed; trying again");
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            }
        }
    }
}

extern "C" {
    // Part of libcrypto's public API (x509_vfy.h) since OpenSSL 0.9.8; the
    // openssl-sys bindings do not declare it.
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::os::raw::c_int;
}

/// Adds a CRL to a store being built.
fn add_crl(builder: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers are valid for the duration of the call, and
    // X509_STORE_add_crl takes its own reference to the CRL.
    let added = unsafe { X509_STORE_add_crl(builder.as_ptr(), crl.as_ptr()) };
    if added > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// How long until `time`, zero when it has passed (`None` when OpenSSL cannot tell).
fn until(time: &Asn1TimeRef) -> Option<Duration> {
    let now = Asn1Time::days_from_now(0).ok()?;
    let diff = now.diff(time).ok()?;
    let seconds = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Some(Duration::from_secs(seconds.max(0) as u64))
}

impl Trust {
    /// Loads the CA (first certificate of the file) and, when configured, the
    /// CRL (first CRL of the file), as fedmsg's `load_certificates` does.
    fn load(config: &SecurityConfig) -> Result<Trust, TrustError> {
        let ca_pem = fetch("CA certificate", &config.ca_cert_location)?;
        let crl_pem = if config.crl_location.trim().is_empty() {
            None
        } else {
            Some(fetch("CRL", &config.crl_location)?)
        };
        Trust::from_pem(config, ca_pem, crl_pem)
    }

    /// Builds the store from the CA's and the CRL's PEM text.
    fn from_pem(
        config: &SecurityConfig,
        ca_pem: Vec<u8>,
        crl_pem: Option<Vec<u8>>,
    ) -> Result<Trust, TrustError> {
        let ca = X509::from_pem(&ca_pem).map_err(|source| TrustError::Parse {
            what: "CA certificate",
            path: PathBuf::from(&config.ca_cert_location),
            expected: "certificate",
            source,
        })?;
        let crl = match &crl_pem {
            None => None,
            Some(pem) => Some(X509Crl::from_pem(pem).map_err(|source| TrustError::Parse {
                what: "CRL",
                path: PathBuf::from(&config.crl_location),
                expected: "X509 CRL",
                source,
            })?),
        };
        let mut builder = X509StoreBuilder::new().map_err(TrustError::Store)?;
        builder.add_cert(ca).map_err(TrustError::Store)?;
        let mut crl_deadline = None;
        if let Some(crl) = &crl {
            add_crl(&mut builder, crl).map_err(TrustError::Store)?;
            builder
                .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                .map_err(TrustError::Store)?;
            crl_deadline = crl
                .next_update()
                .and_then(until)
                .map(|left| Instant::now() + left);
        }
        Ok(Trust {
            generation: TRUST_GENERATION.fetch_add(1, Ordering::Relaxed),
            store: builder.build(),
            crl_deadline,
            verdicts: Mutex::new(Verdicts::default()),
            source: (ca_pem, crl_pem),
        })
    }

    /// The verdict on a `certificate` field: from this thread's last signer,
    /// from the cache, or reached now (counting the cache's size in `stats`).
    fn signer(&self, field: &str, stats: &SecurityStats) -> Result<Arc<TrustedSigner>, Rejection> {
        let now = Instant::now();
        let seen = LAST_SIGNERS_SEEN.with(|seen| {
            seen.borrow()
                .iter()
                .find(|last| {
                    last.generation == self.generation
                        && last.recheck_at > now
                        && *last.certificate == *field
                })
                .map(|last| last.signer.clone())
        });
        if let Some(signer) = seen {
            return Ok(signer);
        }
        let (outcome, recheck_at) = self.cached_verdict(field, now, stats);
        if let Ok(signer) = &outcome {
            LAST_SIGNERS_SEEN.with(|seen| {
                let mut seen = seen.borrow_mut();
                // Those of another load of the CA and CRL, or expired, go
                // first; then the one seen longest ago.
                seen.retain(|last| last.generation == self.generation && last.recheck_at > now);
                seen.truncate(LAST_SIGNERS - 1);
                seen.insert(
                    0,
                    LastSigner {
                        generation: self.generation,
                        certificate: field.into(),
                        signer: signer.clone(),
                        recheck_at,
                    },
                );
            });
        }
        outcome
    }

    /// The verdict on a `certificate` field from the cache, or reached now,
    /// and until when it holds.
    fn cached_verdict(
        &self,
        field: &str,
        now: Instant,
        stats: &SecurityStats,
    ) -> (Result<Arc<TrustedSigner>, Rejection>, Instant) {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(verdict) = verdicts.get(field) {
            if verdict.recheck_at > now {
                return (verdict.outcome.clone(), verdict.recheck_at);
            }
        }
        let verdict = self.check(field, now);
        let reached = (verdict.outcome.clone(), verdict.recheck_at);
        if verdicts.len() >= MAX_CACHED_CERTIFICATES {
            verdicts.clear();
        }
        verdicts.insert(field.into(), verdict);
        stats.set_certificates_cached(verdicts.len());
        reached
    }

    /// Parses a `certificate` field and checks it against the CA and the CRL.
    fn check(&self, field: &str, now: Instant) -> Verdict {
        let rejected = |rejection: Rejection| Verdict {
            outcome: Err(rejection),
            recheck_at: now + REJECTED_RECHECK,
        };
        let untrusted = |detail: &'static str| {
            rejected(Rejection::new(RejectReason::UntrustedCertificate, detail))
        };
        let Some(pem) = lenient_base64(field) else {
            return untrusted("certificate is not base64");
        };
        let Ok(cert) = X509::from_pem(&pem) else {
            return untrusted("certificate is not a PEM certificate");
        };
        let cn: Option<Arc<str>> = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|entry| entry.data().to_string().ok())
            .map(Arc::from);
        let verified = Stack::new().and_then(|chain| {
            X509StoreContext::new()?.init(&self.store, &cert, &chain, |ctx| {
                let ok = ctx.verify_cert()?;
                Ok((ok, ctx.error()))
            })
        });
        match verified {
            Ok((true, _)) => {}
            Ok((false, error)) => {
                let reason = match error.as_raw() {
                    openssl_sys::X509_V_ERR_CERT_REVOKED => RejectReason::Revoked,
                    openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED
                    | openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID
                    | openssl_sys::X509_V_ERR_CRL_HAS_EXPIRED
                    | openssl_sys::X509_V_ERR_CRL_NOT_YET_VALID => RejectReason::Expired,
                    _ => RejectReason::UntrustedCertificate,
                };
                return rejected(Rejection::new(reason, error.error_string()).by(cn.as_ref()));
            }
            Err(_) => return untrusted("certificate could not be checked"),
        }
        let Some(cn) = cn else {
            return untrusted("certificate subject has no CN");
        };
        let key = match cert.public_key() {
            Ok(key) if key.id() == Id::RSA => key.rsa().ok(),
            _ => None,
        };
        let key = match key {
            Some(key) => key,
            None => {
                return rejected(
                    Rejection::new(
                        RejectReason::UntrustedCertificate,
                        "certificate key is not RSA",
                    )
                    .by(Some(&cn)),
                )
            }
        };
        let crl_left = self
            .crl_deadline
            .map(|at| at.saturating_duration_since(now));
        let valid_for = [until(cert.not_after()), crl_left]
            .into_iter()
            .flatten()
            .fold(TRUSTED_RECHECK, Duration::min);
        Verdict {
            outcome: Ok(Arc::new(TrustedSigner { key, cn })),
            recheck_at: now + valid_for,
        }
    }
}

/// Decodes base64 the way Python's `base64.b64decode` does by default:
/// characters outside the alphabet (newlines, spaces) are skipped; the
/// padding must be right.
pub fn lenient_base64(text: &str) -> Option<Vec<u8>> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    if let Some(decoded) = decode_lines(text, &ENGINE) {
        return Some(decoded);
    }
    let mut kept: Vec<u8> = Vec::with_capacity(text.len());
    kept.extend(
        text.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')),
    );
    ENGINE.decode(kept).ok()
}

/// Decodes base64 wrapped in lines (fedmsg's 76 characters and `\n`) line
/// by line, without copying the text first. `None` when the text is not of
/// that shape: a line before the last whose length is not a multiple of 4 or
/// that holds padding, or any character outside the alphabet (the general
/// path of [`lenient_base64`] decides then). When it succeeds the result is
/// the general path's: whole quanta decode the same alone as joined.
fn decode_lines(text: &str, engine: &base64::engine::GeneralPurpose) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut lines = text.split('\n').filter(|line| !line.is_empty()).peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_some() && (line.len() % 4 != 0 || line.contains('=')) {
            return None;
        }
        engine.decode_vec(line, &mut out).ok()?;
    }
    Some(out)
}

/// The routing policy: exact topics to the CNs allowed to sign them.
struct RoutingPolicy {
    topics: HashMap<String, Vec<String>>,
    nitpicky: bool,
}

impl RoutingPolicy {
    /// fedmsg's `validate_policy`.
    fn allows(&self, topic: &str, signer: &str) -> Result<(), Cow<'static, str>> {
        match self.topics.get(topic) {
            Some(signers) if signers.iter().any(|s| s == signer) => Ok(()),
            Some(_) => Err("routing_policy does not list the signer for this topic".into()),
            None if self.nitpicky => {
                Err("routing_nitpicky: routing_policy has no entry for this topic".into())
            }
            None => Ok(()),
        }
    }
}

/// Validates messages (see the module documentation). Shared by the decoding
/// thread and whatever reloads the CA and CRL.
pub struct Validator {
    config: SecurityConfig,
    policy: RoutingPolicy,
    trust: RwLock<Arc<Trust>>,
    stats: Arc<SecurityStats>,
}

impl Validator {
    /// Loads the CA and CRL named by `config`; fails naming the file.
    pub fn load(
        config: &SecurityConfig,
        stats: Arc<SecurityStats>,
    ) -> Result<Validator, TrustError> {
        let trust = Trust::load(config)?;
        stats.set_trust_loaded(SystemTime::now());
        stats.set_enabled(true);
        Ok(Validator {
            config: config.clone(),
            policy: RoutingPolicy {
                topics: config
                    .routing_policy
                    .iter()
                    .map(|(topic, signers)| (topic.clone(), signers.clone()))
                    .collect(),
                nitpicky: config.routing_nitpicky,
            },
            trust: RwLock::new(Arc::new(trust)),
            stats,
        })
    }

    /// Loads the CA and CRL again. When either changed, the cached verdicts
    /// start over; when both read the same, they are kept. On failure the CA
    /// and CRL loaded before stay in use (see the module documentation), and
    /// the failure is counted and shown in `/state`.
    pub fn reload(&self) -> Result<Reloaded, TrustError> {
        let trust = match Trust::load(&self.config) {
            Ok(trust) => trust,
            Err(error) => {
                self.stats
                    .count_trust_reload_failure(crate::error_chain(&error));
                return Err(error);
            }
        };
        let mut current = self.trust.write().unwrap_or_else(|p| p.into_inner());
        let outcome = if current.source == trust.source {
            Reloaded::Unchanged
        } else {
            *current = Arc::new(trust);
            self.stats.set_certificates_cached(0);
            Reloaded::Changed
        };
        drop(current);
        self.stats.set_trust_loaded(SystemTime::now());
        Ok(outcome)
    }

    /// The configuration it validates with.
    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// The stats it counts into.
    pub fn stats(&self) -> &Arc<SecurityStats> {
        &self.stats
    }

    /// Validates a decoded message (steps 2 to 6 of the module documentation;
    /// decoding did step 1).
    pub fn validate(&self, envelope: &Envelope) -> Result<(), Rejection> {
        self.validate_body(envelope.topic(), envelope.body().as_bytes())
    }

    /// Validates a body whose topic frame was `topic` (already checked equal).
    pub fn validate_body(&self, topic: &str, body: &[u8]) -> Result<(), Rejection> {
        let Ok(body) = signed_body(body) else {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                "body is not a JSON object fedmsg can canonicalize",
            ));
        };
        match &body.crypto {
            Field::Text(backend) if backend == "x509" => {}
            Field::Text(backend) if backend == "gpg" => {
                return Err(Rejection::new(
                    RejectReason::Unsigned,
                    "signed with the gpg backend, which crypto_validate_backends does not allow",
                ))
            }
            Field::Text(_) | Field::Other => {
                return Err(Rejection::new(
                    RejectReason::Unsigned,
                    "impossible crypto backend",
                ))
            }
            Field::Absent if body.certificate != Field::Absent => {}
            Field::Absent if body.signature != Field::Absent => {
                return Err(Rejection::new(
                    RejectReason::Unsigned,
                    "signature without certificate (gpg), which crypto_validate_backends does not allow",
                ))
            }
            Field::Absent => {
                return Err(Rejection::new(
                    RejectReason::Unsigned,
                    "message is not signed",
                ))
            }
        }
        let signature = match &body.signature {
            Field::Absent => {
                return Err(Rejection::new(RejectReason::Unsigned, "no signature field"))
            }
            Field::Other => {
                return Err(Rejection::new(
                    RejectReason::BadSignature,
                    "signature is not a string",
                ))
            }
            Field::Text(text) => text,
        };
        let certificate = match &body.certificate {
            Field::Absent => {
                return Err(Rejection::new(
                    RejectReason::Unsigned,
                    "no certificate field",
                ))
            }
            Field::Other => {
                return Err(Rejection::new(
                    RejectReason::UntrustedCertificate,
                    "certificate is not a string",
                ))
            }
            Field::Text(text) => text,
        };
        let Some(signature) = lenient_base64(signature) else {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                "signature is not base64",
            ));
        };
        let signer = self
            .trust
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .signer(certificate, &self.stats)?;
        if !signer.verifies(&signature, body.signed.as_bytes()) {
            return Err(Rejection::new(
                RejectReason::BadSignature,
                "signature does not match the message",
            )
            .by(Some(&signer.cn)));
        }
        self.policy
            .allows(topic, &signer.cn)
            .map_err(|detail| Rejection::new(RejectReason::Policy, detail).by(Some(&signer.cn)))
    }
}

/// What a successful [`Validator::reload`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The CA or the CRL changed: certificates are checked again against them.
    Changed,
    /// Both read the same as before: the cached verdicts stay.
    Unchanged,
}

enum Wake {
    Reload,
    Stop,
}

/// The thread that loads the CA and CRL again every `[security]
/// crl_cache_expiry` seconds (never when 0) and on every reload request of
/// the hub (SIGHUP). Dropping it stops the thread.
pub struct TrustReloader {
    wake: std::sync::mpsc::Sender<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TrustReloader {
    /// Starts the thread, listening to `hook`.
    pub fn start(
        validator: Arc<Validator>,
        hook: &crate::reload::ReloadHook,
    ) -> std::io::Result<TrustReloader> {
        let (wake, woken) = std::sync::mpsc::channel();
        let requests = wake.clone();
        hook.on_reload(move || {
            let _ = requests.send(Wake::Reload);
        });
        let interval = match validator.config.crl_cache_expiry {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        let thread = std::thread::Builder::new()
            .name("fedhub-trust".into())
            .spawn(move || loop {
                use std::sync::mpsc::RecvTimeoutError;
                let cause = match interval {
                    Some(interval) => match woken.recv_timeout(interval) {
                        Ok(Wake::Reload) => "request",
                        Err(RecvTimeoutError::Timeout) => "interval",
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match woken.recv() {
                        Ok(Wake::Reload) => "request",
                        Ok(Wake::Stop) | Err(_) => return,
                    },
                };
                let config = validator.config();
                match validator.reload() {
                    Ok(Reloaded::Changed) => tracing::info!(
                        cause,
                        ca = %config.ca_cert_location,
                        crl = %config.crl_location,
                        "ca and crl reloaded: changed, certificates are checked again"
                    ),
                    Ok(Reloaded::Unchanged) => tracing::debug!(
                        cause,
                        ca = %config.ca_cert_location,
                        crl = %config.crl_location,
                        "ca and crl reloaded: unchanged"
                    ),
                    Err(error) => tracing::warn!(
                        cause,
                        error = %crate::error_chain(&error),
                        "cannot reload the ca and crl; keeping the ones loaded before"
                    ),
                }
            })?;
        Ok(TrustReloader {
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for TrustReloader {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A signing identity: the key and certificate fedmsg's `certnames` point to.
pub struct SigningKey {
    key: PKey<Private>,
    /// `certificate` as fedmsg writes it (base64 of the PEM, wrapped).
    certificate_field: String,
    /// The certificate's basename in `ssldir`.
    certname: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("certname", &self.certname)
            .finish_non_exhaustive()
    }
}

/// The host name up to its first dot, as fedmsg's `socket.gethostname().split('.')[0]`.
pub fn short_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and the name is read
    // only up to its NUL (or the buffer's end, should it be truncated).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    name.split('.').next().unwrap_or_default().to_string()
}

/// Wraps base64 text as fedmsg's `_prep_crypto_msg` does: lines of 76
/// characters, each ending with `\n`.
pub fn wrap76(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for chunk in encoded.as_bytes().chunks(76) {
        // base64 text is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

impl SigningKey {
    /// The cert index fedmsg's `publish` uses, and how it was formed:
    /// `<cert_prefix>.<short hostname>` when `cert_prefix` is set, else `name`.
    pub fn cert_index(config: &SecurityConfig) -> (String, &'static str) {
        if config.cert_prefix.is_empty() {
            (config.name.clone(), "[security] name")
        } else {
            let index = format!("{}.{}", config.cert_prefix, short_hostname());
            (index, "[security] cert_prefix, a dot, the short host name")
        }
    }

    /// Loads `<ssldir>/<certnames[cert index]>.key` and `.crt`, fedmsg's choice
    /// of certificate (see [`cert_index`](Self::cert_index)).
    pub fn load(config: &SecurityConfig) -> Result<SigningKey, TrustError> {
        let (index, how) = SigningKey::cert_index(config);
        let certname = config.certnames.get(&index).ok_or(TrustError::NoCertname {
            index: index.clone(),
            how,
        })?;
        SigningKey::from_files(
            &config.ssldir.join(format!("{certname}.key")),
            &config.ssldir.join(format!("{certname}.crt")),
            certname,
        )
    }

    /// Loads a PEM RSA key (no password) and its PEM certificate.
    pub fn from_files(
        key_path: &Path,
        cert_path: &Path,
        certname: &str,
    ) -> Result<SigningKey, TrustError> {
        let key =
            PKey::private_key_from_pem(&read("signing key", key_path)?).map_err(|source| {
                TrustError::Parse {
                    what: "signing key",
                    path: key_path.to_path_buf(),
                    expected: "private key (without a password)",
                    source,
                }
            })?;
        let cert = X509::from_pem(&read("signing certificate", cert_path)?).map_err(|source| {
            TrustError::Parse {
                what: "signing certificate",
                path: cert_path.to_path_buf(),
                expected: "certificate",
                source,
            }
        })?;
        if key.id() != Id::RSA {
            return Err(TrustError::Key {
                path: key_path.to_path_buf(),
                problem: "is not an RSA key (fedmsg signatures are RSA)",
            });
        }
        let pairs = cert
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !pairs {
            return Err(TrustError::Key {
                path: key_path.to_path_buf(),
                problem: "does not belong to the certificate beside it",
            });
        }
        let pem = cert.to_pem().map_err(TrustError::Store)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
        Ok(SigningKey {
            key,
            certificate_field: wrap76(&encoded),
            certname: certname.to_string(),
        })
    }

    /// The certificate's basename in `ssldir`.
    pub fn certname(&self) -> &str {
        &self.certname
    }

    /// Signs an envelope as fedmsg's `sign` does: sets `crypto` to `x509`,
    /// signs the canonical JSON of the envelope with PKCS#1 v1.5 SHA-1, and adds
    /// `signature` and `certificate` (base64, wrapped at 76 with a final newline).
    pub fn sign(
        &self,
        envelope: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ErrorStack> {
        envelope.remove("signature");
        envelope.remove("certificate");
        envelope.insert("crypto".into(), "x509".into());
        let data =
            crate::canonical::to_canonical_string(&serde_json::Value::Object(envelope.clone()));
        let mut signer = Signer::new(MessageDigest::sha1(), &self.key)?;
        let signature = signer.sign_oneshot_to_vec(data.as_bytes())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
        envelope.insert("signature".into(), wrap76(&encoded).into());
        envelope.insert("certificate".into(), self.certificate_field.clone().into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_read_like_python() {
        assert_eq!(
            lenient_base64("aGVs\nbG8=\n").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(lenient_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(lenient_base64("aGVs bG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(lenient_base64("aGVsbG8"), None, "padding is required");
        assert_eq!(lenient_base64("a"), None);
        assert_eq!(lenient_base64("").as_deref(), Some(&b""[..]));
        // Line by line, or the general path: the same answers.
        assert_eq!(
            lenient_base64("aGVs\nbG8h\nISE=\n").as_deref(),
            Some(&b"hello!!!"[..])
        );
        assert_eq!(lenient_base64("aGVsbG8=\nISE=\n"), None, "padding inside");
        assert_eq!(lenient_base64("aGVsb\nG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            lenient_base64("\n\naGVsbG8=\n\n").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(lenient_base64("aGVs\nbG8").as_deref(), None);
        let bytes: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let wrapped = wrap76(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        assert_eq!(lenient_base64(&wrapped), Some(bytes));
    }

    #[test]
    fn wrapping_matches_fedmsg() {
        let text = "A".repeat(172);
        let wrapped = wrap76(&text);
        let lines: Vec<&str> = wrapped.split_terminator('\n').collect();
        assert_eq!(
            lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
            vec![76, 76, 20]
        );
        assert!(wrapped.ends_with('\n'));
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let labels: std::collections::BTreeSet<_> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }
}
