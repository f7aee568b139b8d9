//! E-mail: one plain-text message per delivery, sent over SMTP.
//!
//! The format follows FMN's e-mail backend: the subject is fedmsg_meta's
//! subtitle (a digest's is `Fedora Notifications Digest (N updates)`), the
//! body the subtitle with the link on the next line after a tab, and the
//! headers `Precedence: Bulk`, `Auto-Submitted: auto-generated`,
//! `X-Fedmsg-Topic`, `X-Fedmsg-Category` and `X-Fedmsg-Id` let people filter
//! their mail. See [`render`] for the exact layout.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, Message, SmtpTransport, Transport};

use super::{DeliveryConfig, Notification, Outgoing, SendError};

/// The longest subject, in characters; a longer subtitle is cut at a word
/// boundary and ends with `...`.
pub const SUBJECT_MAX_CHARS: usize = 150;

/// The line between the entries of a digest.
const SEPARATOR: &str =
    "-------------------------------------------------------------------------------";

/// A rendered e-mail, before it gets its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The `Subject` header.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// Further headers, in order (name, value).
    pub headers: Vec<(&'static str, String)>,
}

/// Sends e-mails through the configured SMTP server.
pub(crate) struct EmailSender {
    transport: SmtpTransport,
    from: Mailbox,
    server: String,
}

impl EmailSender {
    /// A sender for `config` (already validated).
    pub(crate) fn new(config: &DeliveryConfig) -> Result<EmailSender, String> {
        let from: Mailbox = config
            .smtp_from
            .parse()
            .map_err(|e| format!("smtp_from = {:?}: {e}", config.smtp_from))?;
        let mut builder = SmtpTransport::builder_dangerous(config.smtp_host.clone())
            .port(config.smtp_port)
            .timeout(Some(config.smtp_timeout()));
        if config.smtp_starttls {
            let tls = TlsParameters::new(config.smtp_host.clone())
                .map_err(|e| format!("smtp_starttls = true: {}", fedhub::error_chain(&e)))?;
            builder = builder.tls(Tls::Required(tls));
        }
        if let (Some(user), Some(password)) = (&config.smtp_username, &config.smtp_password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from,
            server: format!("{}:{}", config.smtp_host, config.smtp_port),
        })
    }

    /// Sends `outgoing` to `address`. An address that does not parse, and a
    /// permanent (5xx) refusal by the server, are permanent failures; the
    /// rest (connection refused, timeouts, 4xx) are transient.
    pub(crate) fn send(&self, address: &str, outgoing: &Outgoing) -> Result<(), SendError> {
        let to: Address = address.trim().parse().map_err(|e| {
            SendError::Permanent(format!("e-mail address {address:?} is invalid: {e}"))
        })?;
        let rendered = render(outgoing);
        let message = build(&self.from, Mailbox::new(None, to), &rendered).map_err(|e| {
            SendError::Permanent(format!("e-mail to {address} could not be built: {e}"))
        })?;
        match self.transport.send(&message) {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = format!(
                    "smtp {} refused or failed for {address}: {}",
                    self.server,
                    fedhub::error_chain(&e)
                );
                if e.is_permanent() {
                    Err(SendError::Permanent(text))
                } else {
                    Err(SendError::Transient(text))
                }
            }
        }
    }
}

fn build(from: &Mailbox, to: Mailbox, rendered: &Rendered) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(None)
        .header(ContentType::TEXT_PLAIN);
    for (name, value) in &rendered.headers {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value.clone(),
        ));
    }
    builder
        .body(rendered.body.clone())
        .map_err(|e| e.to_string())
}

/// The subject for `subtitle`: whitespace collapsed to single spaces, at most
/// [`SUBJECT_MAX_CHARS`] characters; the topic's title (the part after
/// `org.fedoraproject.<env>.`) when the subtitle is empty.
pub fn subject_line(subtitle: &str, topic: &str) -> String {
    let line = subtitle.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = if line.is_empty() { title(topic) } else { line };
    if line.chars().count() <= SUBJECT_MAX_CHARS {
        return line;
    }
    let cut: String = line.chars().take(SUBJECT_MAX_CHARS - 3).collect();
    let cut = match cut.rfind(' ') {
        Some(space) if space > SUBJECT_MAX_CHARS / 2 => &cut[..space],
        _ => cut.as_str(),
    };
    format!("{}...", cut.trim_end())
}

/// fedmsg_meta's title: the topic without its first three parts.
fn title(topic: &str) -> String {
    let parts: Vec<&str> = topic.split('.').collect();
    if parts.len() > 3 {
        parts[3..].join(".")
    } else {
        topic.to_string()
    }
}

/// The category: the topic's fourth part (`bodhi` in
/// `org.fedoraproject.prod.bodhi.update.comment`).
fn category(topic: &str) -> Option<&str> {
    topic.split('.').nth(3).filter(|c| !c.is_empty())
}

fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// One notification's lines: the subtitle, then the link after a tab.
fn entry(n: &Notification) -> String {
    let mut text = n.subtitle.trim().to_string();
    if text.is_empty() {
        text = title(&n.topic);
    }
    if !n.link.is_empty() {
        text.push_str("\n\t");
        text.push_str(&n.link);
    }
    text
}

/// The e-mail for `outgoing`.
///
/// One notification:
/// ```text
/// Subject: <subtitle>
///
/// <subtitle>
/// <TAB><link>
///
/// Topic: <topic>
/// Message: <msg_id>
///
/// --
/// You received this message because of your filter "<filter name>" (id <filter id>)
/// for <openid>.
/// ```
/// (`<TAB>` stands for a tab character.) A digest of several (a digest of
/// one is sent as the single notification):
/// ```text
/// Subject: Fedora Notifications Digest (<N> updates)
///
/// Digest summary:
/// 1.<TAB><subtitle 1>
/// 2.<TAB><subtitle 2>
///
/// -------------------------------------------------------------------------------
///
/// <subtitle 1>
/// <TAB><link 1>
/// Topic: <topic 1>
/// Message: <msg_id 1>
///
/// -------------------------------------------------------------------------------
///
/// <subtitle 2>
/// ...
/// ```
/// Headers: `Precedence: Bulk`, `Auto-Submitted: auto-generated`, and
/// `X-Fedmsg-Topic`, `X-Fedmsg-Category`, `X-Fedmsg-Id` (for a digest each
/// holds the distinct values joined by `, `; `X-Fedmsg-Id` only for one
/// notification).
pub fn render(outgoing: &Outgoing) -> Rendered {
    let mut headers = vec![
        ("Precedence", "Bulk".to_string()),
        ("Auto-Submitted", "auto-generated".to_string()),
    ];
    match outgoing {
        Outgoing::Single(n) => single(n, headers),
        Outgoing::Digest { notifications, .. } if notifications.len() == 1 => {
            single(&notifications[0], headers)
        }
        Outgoing::Digest { notifications, .. } => {
            let topics = unique(notifications.iter().map(|n| n.topic.as_str()));
            let categories = unique(topics.iter().filter_map(|t| category(t)));
            if !topics.is_empty() {
                headers.push(("X-Fedmsg-Topic", topics.join(", ")));
            }
            if !categories.is_empty() {
                headers.push(("X-Fedmsg-Category", categories.join(", ")));
            }
            let mut body = String::from("Digest summary:\n");
            for (i, n) in notifications.iter().enumerate() {
                let line = subject_line(&n.subtitle, &n.topic);
                body.push_str(&format!("{}.\t{line}\n", i + 1));
            }
            for n in notifications {
                body.push_str(&format!("\n{SEPARATOR}\n\n"));
                body.push_str(&entry(n));
                body.push_str(&format!("\nTopic: {}\nMessage: {}\n", n.topic, n.msg_id));
            }
            Rendered {
                subject: format!(
                    "Fedora Notifications Digest ({} updates)",
                    notifications.len()
                ),
                body,
                headers,
            }
        }
    }
}

fn single(n: &Notification, mut headers: Vec<(&'static str, String)>) -> Rendered {
    headers.push(("X-Fedmsg-Topic", n.topic.clone()));
    if let Some(c) = category(&n.topic) {
        headers.push(("X-Fedmsg-Category", c.to_string()));
    }
    headers.push(("X-Fedmsg-Id", n.msg_id.clone()));
    let body = format!(
        "{}\n\nTopic: {}\nMessage: {}\n\n--\nYou received this message because of your filter \"{}\" (id {})\nfor {}.\n",
        entry(n),
        n.topic,
        n.msg_id,
        n.filter_name,
        n.filter_id,
        n.openid
    );
    Rendered {
        subject: subject_line(&n.subtitle, &n.topic),
        body,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn note(subtitle: &str, link: &str) -> Notification {
        Notification {
            openid: "ralph.id.fedoraproject.org".into(),
            context: "email".into(),
            address: "ralph@example.org".into(),
            filter_name: "Events on packages that I own".into(),
            filter_id: 7,
            msg_id: "2014-abc".into(),
            topic: "org.fedoraproject.prod.buildsys.build.state.change".into(),
            subtitle: subtitle.into(),
            link: link.into(),
            message: json!({}),
        }
    }

    #[test]
    fn single_mail_layout() {
        let r = render(&Outgoing::Single(note(
            "ralph's eclipse-ptp-1-2 completed",
            "http://koji.fedoraproject.org/koji/buildinfo?buildID=1",
        )));
        assert_eq!(r.subject, "ralph's eclipse-ptp-1-2 completed");
        assert_eq!(
            r.body,
            "ralph's eclipse-ptp-1-2 completed\n\thttp://koji.fedoraproject.org/koji/buildinfo?buildID=1\n\n\
             Topic: org.fedoraproject.prod.buildsys.build.state.change\nMessage: 2014-abc\n\n--\n\
             You received this message because of your filter \"Events on packages that I own\" (id 7)\n\
             for ralph.id.fedoraproject.org.\n"
        );
        assert!(r
            .headers
            .contains(&("X-Fedmsg-Category", "buildsys".into())));
        assert!(r.headers.contains(&("X-Fedmsg-Id", "2014-abc".into())));
    }

    #[test]
    fn subjects_are_one_short_line() {
        assert_eq!(subject_line("a\n  b\tc", "t"), "a b c");
        assert_eq!(
            subject_line("", "org.fedoraproject.prod.bodhi.update.comment"),
            "bodhi.update.comment"
        );
        let long = "word ".repeat(100);
        let s = subject_line(&long, "t");
        assert!(
            s.chars().count() <= SUBJECT_MAX_CHARS && s.ends_with("word..."),
            "{s}"
        );
    }

    #[test]
    fn digest_lists_every_subtitle_and_link() {
        let r = render(&Outgoing::Digest {
            openid: "ralph.id.fedoraproject.org".into(),
            context: "email".into(),
            address: "ralph@example.org".into(),
            notifications: vec![note("first", "https://a/1"), note("second", "https://a/2")],
        });
        assert_eq!(r.subject, "Fedora Notifications Digest (2 updates)");
        assert!(r
            .body
            .starts_with("Digest summary:\n1.\tfirst\n2.\tsecond\n"));
        assert!(
            r.body.contains("first\n\thttps://a/1\n") && r.body.contains("second\n\thttps://a/2\n")
        );
        assert!(!r.headers.iter().any(|(n, _)| *n == "X-Fedmsg-Id"));
    }
}
