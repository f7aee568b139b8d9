//! Webhooks: one HTTP `POST` of JSON per delivery to the preference's URL.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Notification, Outgoing, SendError};

/// Posts deliveries with one shared HTTP agent (connections are reused).
pub(crate) struct WebhookSender {
    agent: ureq::Agent,
}

impl WebhookSender {
    /// A sender whose every request (connecting included) ends within `timeout`.
    pub(crate) fn new(timeout: Duration) -> WebhookSender {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("fedhub-notifications/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        WebhookSender { agent }
    }

    /// Posts `outgoing` to `url`: success on 2xx; other statuses and
    /// transport errors are transient failures naming the URL and the cause;
    /// a URL that is not `http://` or `https://` is a permanent failure.
    pub(crate) fn send(&self, url: &str, outgoing: &Outgoing) -> Result<(), SendError> {
        check_url(url)?;
        let body = payload(outgoing).to_string();
        match self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(SendError::Transient(format!(
                "webhook {url} answered HTTP {}",
                response.status()
            ))),
            Err(e) => Err(SendError::Transient(format!("webhook {url} failed: {e}"))),
        }
    }
}

/// Accepts only `http://` and `https://` URLs with a host.
pub(crate) fn check_url(url: &str) -> Result<(), SendError> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(SendError::Permanent(format!(
            "webhook address {url:?} is not an http:// or https:// URL"
        ))),
    }
}

fn single(n: &Notification) -> Value {
    json!({
        "openid": n.openid,
        "context": n.context,
        "filter": n.filter_name,
        "filter_id": n.filter_id,
        "msg_id": n.msg_id,
        "topic": n.topic,
        "subtitle": n.subtitle,
        "link": n.link,
        "message": n.message,
    })
}

/// The JSON document posted for `outgoing`: for one notification
/// `{"openid","context","filter","filter_id","msg_id","topic","subtitle","link","message"}`,
/// for a digest `{"openid","context","notifications":[<the same per notification>]}`.
pub fn payload(outgoing: &Outgoing) -> Value {
    match outgoing {
        Outgoing::Single(n) => single(n),
        Outgoing::Digest {
            openid,
            context,
            notifications,
            ..
        } => json!({
            "openid": openid,
            "context": context,
            "notifications": notifications.iter().map(single).collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("HTTPS://example.org").is_ok());
        for bad in [
            "ftp://example.org/",
            "example.org",
            "http://",
            "http:///x",
            "mailto:a@b",
            "http://a b",
        ] {
            match check_url(bad) {
                Err(SendError::Permanent(e)) => assert!(e.contains(bad), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
