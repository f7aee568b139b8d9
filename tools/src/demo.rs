//! Synthetic Fedora traffic: plausible messages for buildsys, bodhi, git, badges,
//! planet, fas, meetbot and pkgdb, with a realistic skew (builds are spammy, a
//! few users and packages are very active, a long tail is not). Used by
//! `fedhub run --demo`, by benchmarks, and as a corpus generator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use fedhub::to_canonical_string;
use fedhub::{build_topic, new_msg_id};

const USERS: &[&str] = &[
    "ralph",
    "pingou",
    "kevin",
    "adamw",
    "churchyard",
    "mattdm",
    "decathorpe",
    "sgallagh",
    "lmacken",
    "hadess",
    "puiterwijk",
    "abompard",
    "nirik",
    "jflory7",
    "bcotton",
    "dustymabe",
    "tdawson",
    "ngompa",
    "zbyszek",
    "kalev",
    "mhroncok",
    "pbrobinson",
    "jlanda",
    "bowlofeggs",
    "mattia",
    "limb",
    "salimma",
    "music",
    "gui1ty",
    "carlwgeorge",
];

const PACKAGES: &[&str] = &[
    "kernel",
    "python3",
    "firefox",
    "gnome-shell",
    "systemd",
    "glibc",
    "rust",
    "golang",
    "nodejs",
    "libreoffice",
    "ansible",
    "podman",
    "mesa",
    "gcc",
    "llvm",
    "python-requests",
    "rubygem-rails",
    "perl",
    "texlive",
    "qt6-qtbase",
    "flatpak",
    "dnf",
    "rpm",
    "anaconda",
    "eclipse-ptp",
    "fedmsg",
    "datanommer",
    "bodhi",
    "koji",
    "pagure",
];

const BADGES: &[&str] = &[
    "Junior Tagger",
    "Bodhi Commenter",
    "Koji Success",
    "Mirror, Mirror",
    "Like a Rock",
    "Paranoid Panda",
    "Speak Up!",
    "Involvement",
    "Curious Penguin",
    "Egg",
];

const BRANCHES: &[&str] = &["rawhide", "f41", "f40", "epel9", "epel10"];

/// A deterministic generator of fedmsg envelopes.
pub struct Generator {
    state: u64,
    topic_prefix: String,
    environment: String,
    counter: u64,
}

impl Generator {
    /// A generator; the same seed gives the same sequence (apart from msg ids).
    pub fn new(seed: u64, topic_prefix: &str, environment: &str) -> Generator {
        Generator {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            topic_prefix: topic_prefix.into(),
            environment: environment.into(),
            counter: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A skewed pick: the first entries are much more likely (roughly Zipf).
    fn skewed(&mut self, n: usize) -> usize {
        let r = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(r) - 1.0).floor().min(n as f64 - 1.0) as usize
    }

    /// A user: mostly the known active ones, sometimes one of thousands of others.
    pub fn user(&mut self) -> String {
        if self.below(10) < 7 {
            USERS[self.skewed(USERS.len())].to_string()
        } else {
            format!("user{}", self.skewed(5000))
        }
    }

    /// A package, skewed the same way.
    pub fn package(&mut self) -> String {
        if self.below(10) < 7 {
            PACKAGES[self.skewed(PACKAGES.len())].to_string()
        } else {
            format!("python-pkg{}", self.skewed(20000))
        }
    }

    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(len);
        s
    }

    /// The next `(suffix topic, msg)` pair, e.g. `("buildsys.build.state.change", {...})`.
    pub fn next_payload(&mut self) -> (&'static str, Value) {
        let kind = self.below(100);
        let user = self.user();
        let package = self.package();
        let version = format!("{}.{}.{}", self.below(10), self.below(30), self.below(10));
        let release = format!("{}.fc{}", self.below(5) + 1, 40 + self.below(3));
        let nvr = format!("{package}-{version}-{release}");
        match kind {
            0..=34 => (
                "buildsys.build.state.change",
                json!({
                    "build_id": 2_000_000 + self.below(900_000),
                    "old": 0, "new": ([1, 1, 1, 3, 4][self.below(5)]),
                    "owner": user, "name": package, "version": version, "release": release,
                    "epoch": null, "instance": "primary", "attribute": "state",
                    "task_id": 100_000_000 + self.below(9_000_000),
                }),
            ),
            35..=49 => {
                let branch = BRANCHES[self.below(BRANCHES.len())];
                (
                    "git.receive",
                    json!({
                        "agent": user,
                        "commit": {
                            "username": user, "email": format!("{user}@fedoraproject.org"),
                            "repo": package, "namespace": "rpms", "branch": branch,
                            "rev": self.hex(40), "path": format!("/srv/git/repositories/rpms/{package}.git"),
                            "summary": format!("Update to {version}"),
                            "message": format!("Update to {version}\n\nSigned-off-by: {user}\n"),
                            "stats": {"files": {format!("{package}.spec"): {"additions": 3, "deletions": 2, "lines": 5}},
                                      "total": {"additions": 3, "deletions": 2, "files": 1, "lines": 5}},
                        },
                    }),
                )
            }
            50..=57 => (
                "bodhi.update.request.testing",
                json!({
                    "agent": user,
                    "update": {
                        "alias": format!("FEDORA-2026-{}", self.hex(10)), "title": nvr,
                        "builds": [{"nvr": nvr}], "request": "testing", "status": "pending",
                        "user": {"name": user}, "type": (["bugfix", "security", "enhancement"][self.below(3)]),
                        "release": {"name": "F41", "branch": "f41"},
                    },
                }),
            ),
            58..=64 => {
                let other = self.user();
                (
                    "bodhi.update.comment",
                    json!({
                        "agent": user,
                        "comment": {
                            "text": format!("Works for me, thanks @{other}"), "karma": 1,
                            "user": {"name": user}, "update_alias": format!("FEDORA-2026-{}", self.hex(10)),
                            "update": {"title": nvr, "user": {"name": other}},
                        },
                    }),
                )
            }
            65..=72 => {
                let badge = BADGES[self.skewed(BADGES.len())];
                (
                    "fedbadges.badge.award",
                    json!({
                        "user": {"username": user, "badges_user_id": self.below(200_000)},
                        "badge": {
                            "name": badge,
                            "description": format!("You earned {badge}"),
                            "image_url": format!("https://badges.fedoraproject.org/pngs/{}.png", badge.to_lowercase().replace(' ', "-")),
                        },
                    }),
                )
            }
            73..=76 => (
                "planet.post.new",
                json!({
                    "username": user,
                    "name": user,
                    "post": {"title": format!("What's new in {package} {version}"),
                             "link": format!("https://{user}.fedorapeople.org/blog/{}", self.hex(8))},
                }),
            ),
            77..=82 => (
                "fas.user.update",
                json!({"agent": user, "user": user, "fields": ([&["ircnick"][..], &["timezone"], &["gpg_keyid", "ssh_key"]][self.below(3)])}),
            ),
            83..=85 => {
                let mut attendees = Map::new();
                for _ in 0..(2 + self.below(6)) {
                    attendees.insert(self.user(), Value::from(1 + self.below(40)));
                }
                attendees.insert("zodbot".into(), Value::from(5));
                (
                    "meetbot.meeting.complete",
                    json!({
                        "owner": user, "attendees": attendees, "channel": "#fedora-meeting",
                        "meeting_topic": format!("{} weekly", ["FESCo", "Infrastructure", "QA", "Packaging"][self.below(4)]),
                        "url": format!("http://meetbot.fedoraproject.org/fedora-meeting/2026-11-23/{}", self.hex(6)),
                    }),
                )
            }
            _ => {
                let other = self.user();
                (
                    "pkgdb.acl.update",
                    json!({
                        "agent": user, "username": other,
                        "acl": (["commit", "watchbugzilla", "approveacls"][self.below(3)]),
                        "status": "Approved",
                        "package_listing": {
                            "package": {"name": package, "namespace": "rpms"},
                            "collection": {"branchname": BRANCHES[self.below(BRANCHES.len())]},
                        },
                    }),
                )
            }
        }
    }

    /// The next full envelope, stamped `timestamp`.
    pub fn next_envelope(&mut self, timestamp: u64) -> Map<String, Value> {
        let (suffix, msg) = self.next_payload();
        self.counter += 1;
        let mut envelope = Map::new();
        envelope.insert(
            "topic".into(),
            build_topic(&self.topic_prefix, &self.environment, suffix).into(),
        );
        envelope.insert("msg".into(), msg);
        envelope.insert("timestamp".into(), timestamp.into());
        envelope.insert("msg_id".into(), new_msg_id().into());
        envelope.insert("i".into(), self.counter.into());
        envelope.insert(
            "username".into(),
            ["apache", "fedmsg", "root"][self.below(3)].into(),
        );
        envelope
    }

    /// The next envelope as `(topic, canonical body)` frames.
    pub fn next_frames(&mut self, timestamp: u64) -> (String, String) {
        let envelope = self.next_envelope(timestamp);
        let topic = envelope["topic"].as_str().unwrap_or_default().to_string();
        (topic, to_canonical_string(&Value::Object(envelope)))
    }
}

/// One message in this many of the demo publisher is a release engineering
/// event ([`releng_frames`]), so the statistics consumer's releng dashboard
/// plugin has data too.
pub const RELENG_EVERY: u64 = 25;

/// The `k`th release engineering event, in turn: a compose step finishing,
/// a cloud image uploaded, an updates repository synced, a live CD built;
/// `(topic, canonical body)` stamped `timestamp`.
pub fn releng_frames(
    k: u64,
    topic_prefix: &str,
    environment: &str,
    timestamp: u64,
) -> (String, String) {
    let v = k / RELENG_EVERY / 4;
    let (suffix, msg) = match k / RELENG_EVERY % 4 {
        0 => (
            [
                "compose.rawhide.mash.complete",
                "compose.branched.pungify.start",
            ][(v % 2) as usize],
            json!({"arch": (["", "arm"][(v / 2 % 2) as usize])}),
        ),
        1 => (
            "fedimg.image.upload",
            json!({"status": "completed", "destination": (["us-east-1", "eu-west-1"][(v % 2) as usize]),
                   "image_name": format!("Fedora-Cloud-Base-{}-2026{:04}.x86_64", ["rawhide", "41"][(v / 2 % 2) as usize], k % 1000),
                   "extra": {"id": format!("ami-{k:08x}")}}),
        ),
        2 => (
            ["bodhi.updates.fedora.sync", "bodhi.updates.epel.sync"][(v % 2) as usize],
            json!({"release": (["f41", "epel9"][(v % 2) as usize]), "repo": (["updates", "updates-testing"][(v / 2 % 2) as usize])}),
        ),
        _ => (
            "buildsys.task.state.change",
            json!({"owner": "masher", "method": (["livecd", "appliance"][(v % 2) as usize]),
                   "srpm": "fedora-live-workstation.x86_64", "id": 100_000_000 + k, "new": "CLOSED"}),
        ),
    };
    let envelope = json!({
        "topic": build_topic(topic_prefix, environment, suffix),
        "msg": msg,
        "timestamp": timestamp,
        "msg_id": new_msg_id(),
        "i": k,
        "username": "apache",
    });
    let topic = envelope["topic"].as_str().unwrap_or_default().to_string();
    (topic, to_canonical_string(&envelope))
}

/// Publishes generated traffic to `endpoint` (a PUB that connects, like
/// fedmsg-logger) at `rate` messages per second until `stop` is set.
pub fn spawn_demo_publisher(
    endpoint: &str,
    rate: f64,
    topic_prefix: &str,
    environment: &str,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, zmq::Error> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::PUB)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    let mut generator = Generator::new(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7),
        topic_prefix,
        environment,
    );
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let (prefix, environment) = (topic_prefix.to_string(), environment.to_string());
    let mut sent = 0u64;
    let handle = std::thread::Builder::new()
        .name("fedhub-demo".into())
        .spawn(move || {
            let mut next = Instant::now() + Duration::from_millis(300);
            while !stop.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += interval;
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                sent += 1;
                let (topic, body) = if sent.is_multiple_of(RELENG_EVERY) {
                    releng_frames(sent, &prefix, &environment, ts)
                } else {
                    generator.next_frames(ts)
                };
                if let Err(e) = socket
                    .send(topic.as_bytes(), zmq::SNDMORE)
                    .and_then(|_| socket.send(body.as_bytes(), 0))
                {
                    tracing::warn!(error = %e, "demo publisher could not send");
                }
            }
        })
        .expect("spawning the demo publisher");
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedhub::Envelope;

    #[test]
    fn generated_messages_are_valid_fedmsg() {
        let mut g = Generator::new(42, "org.fedoraproject", "prod");
        let mut categories = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            let (topic, body) = g.next_frames(1_795_392_000);
            let env = Envelope::decode(topic.as_bytes(), body.as_bytes(), 1 << 20).unwrap();
            assert_eq!(env.canonical_body(), body);
            *categories
                .entry(env.category().unwrap().to_string())
                .or_insert(0) += 1;
        }
        assert_eq!(categories.len(), 8, "{categories:?}");
        // buildsys is the spammy one.
        assert!(
            categories["buildsys"] > categories["planet"] * 4,
            "{categories:?}"
        );
    }
}
