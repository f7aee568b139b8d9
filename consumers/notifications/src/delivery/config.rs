//! The delivery settings, read from `[consumers.FMNConsumer]` (the keys are
//! prefixed `smtp_`, `webhook_`, `retry_`, so they stay unambiguous once
//! flattened into the consumer's section).

use std::time::Duration;

use serde::Deserialize;

/// How notifications are sent: the SMTP server, webhook timeouts, retries and
/// worker threads. Unknown keys are rejected; every key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The SMTP server's host name or address (default `127.0.0.1`).
    pub smtp_host: String,
    /// The SMTP server's port (default 25).
    pub smtp_port: u16,
    /// The `From` address of every notification e-mail (default
    /// `notifications@fedoraproject.org`).
    pub smtp_from: String,
    /// Upgrade the SMTP connection with STARTTLS, and refuse to send when the
    /// server does not offer it (default false: plain SMTP, as to a local MTA).
    pub smtp_starttls: bool,
    /// The SMTP user name; with `smtp_password`, the server is asked to
    /// authenticate (default none).
    pub smtp_username: Option<String>,
    /// The SMTP password (with `smtp_username`; default none).
    pub smtp_password: Option<String>,
    /// How long one SMTP conversation may take, in milliseconds (default 10000).
    pub smtp_timeout_ms: u64,
    /// How long one webhook POST may take, connecting included, in
    /// milliseconds (default 5000).
    pub webhook_timeout_ms: u64,
    /// Attempts of one delivery before it is dead-lettered (default 8).
    pub max_attempts: u32,
    /// The delay before the first retry, in milliseconds; it doubles with each
    /// further failure (default 1000).
    pub retry_initial_ms: u64,
    /// The longest delay between two attempts, in milliseconds (default
    /// 600000, ten minutes).
    pub retry_max_ms: u64,
    /// Threads sending at the same time, so one slow target does not hold the
    /// others (default 4).
    pub workers: usize,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            smtp_from: "notifications@fedoraproject.org".into(),
            smtp_starttls: false,
            smtp_username: None,
            smtp_password: None,
            smtp_timeout_ms: 10_000,
            webhook_timeout_ms: 5_000,
            max_attempts: 8,
            retry_initial_ms: 1_000,
            retry_max_ms: 600_000,
            workers: 4,
        }
    }
}

impl DeliveryConfig {
    /// Checks every value; the error names the key, the value and what was
    /// expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.smtp_host.trim().is_empty() {
            return Err("smtp_host = \"\": expected a host name or address".into());
        }
        if self.smtp_port == 0 {
            return Err("smtp_port = 0: expected a port from 1 to 65535".into());
        }
        if self.smtp_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!(
                "smtp_from = {:?}: expected an e-mail address such as notifications@fedoraproject.org",
                self.smtp_from
            ));
        }
        match (&self.smtp_username, &self.smtp_password) {
            (Some(_), None) => {
                return Err(
                    "smtp_username is set without smtp_password: expected both or neither".into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "smtp_password is set without smtp_username: expected both or neither".into(),
                )
            }
            _ => {}
        }
        for (key, value) in [
            ("smtp_timeout_ms", self.smtp_timeout_ms),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            ("retry_initial_ms", self.retry_initial_ms),
        ] {
            if value == 0 {
                return Err(format!(
                    "{key} = 0: expected a positive number of milliseconds"
                ));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(format!(
                "retry_max_ms = {}: expected at least retry_initial_ms ({})",
                self.retry_max_ms, self.retry_initial_ms
            ));
        }
        if self.max_attempts == 0 {
            return Err("max_attempts = 0: expected at least 1".into());
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(format!(
                "workers = {}: expected a number of threads from 1 to 64",
                self.workers
            ));
        }
        Ok(())
    }

    /// The SMTP timeout.
    pub fn smtp_timeout(&self) -> Duration {
        Duration::from_millis(self.smtp_timeout_ms)
    }

    /// The webhook timeout.
    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_millis(self.webhook_timeout_ms)
    }

    /// The delay before the attempt following failed attempt number
    /// `attempts` (1 for the first failure): `retry_initial_ms` doubled per
    /// further failure, at most `retry_max_ms`, less up to 10 % of jitter so
    /// that deliveries failing together do not retry together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(40);
        let delay = self
            .retry_initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.retry_max_ms);
        let jitter = delay / 10 * (jitter_fraction() as u64) / 1000;
        Duration::from_millis(delay - jitter)
    }
}

/// A number from 0 to 999, different from call to call (no cryptographic
/// quality needed: it only spreads retries).
fn jitter_fraction() -> u32 {
    (uuid::Uuid::new_v4().as_u128() % 1000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let config = DeliveryConfig::default();
        config.validate().unwrap();
        assert_eq!(config.smtp_port, 25);
        assert_eq!(config.workers, 4);
        assert_eq!(config.max_attempts, 8);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = DeliveryConfig {
            smtp_from: "not an address".into(),
            ..DeliveryConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("smtp_from"));
        let bad = DeliveryConfig {
            workers: 0,
            ..DeliveryConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("workers = 0"));
        let bad = DeliveryConfig {
            smtp_username: Some("u".into()),
            ..DeliveryConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("smtp_password"));
        let bad = DeliveryConfig {
            retry_max_ms: 10,
            ..DeliveryConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("retry_max_ms"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<DeliveryConfig>(r#"{"smtp_hots": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("smtp_hots"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let config = DeliveryConfig {
            retry_initial_ms: 1000,
            retry_max_ms: 5000,
            ..DeliveryConfig::default()
        };
        let ms = |n| config.backoff(n).as_millis() as u64;
        assert!((900..=1000).contains(&ms(1)));
        assert!((1800..=2000).contains(&ms(2)));
        assert!((3600..=4000).contains(&ms(3)));
        assert!((4500..=5000).contains(&ms(4)));
        assert!((4500..=5000).contains(&ms(40)));
    }
}
