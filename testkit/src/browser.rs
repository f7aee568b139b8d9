//! Headless Chromium for the tests of fedhub's web pages: the DOM after the
//! page's scripts ran, and a screenshot kept as a test artifact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{find_program, workspace_root};

/// Debian's headless Chromium, started afresh (own empty profile) for each page.
pub struct Chromium {
    program: PathBuf,
    profile: tempfile::TempDir,
}

/// The flags every run takes: headless, no sandbox (the tests run as root in
/// CI), and no background traffic (this machine's network is closed, and
/// Chromium would otherwise try Google's hosts at every start).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

impl Chromium {
    /// Finds Chromium; fails (never skips) naming the package when it is missing.
    pub fn new() -> Chromium {
        let program = find_program(
            "chromium",
            &["/usr/bin/chromium"],
            "apt-get install chromium (scripts/test.sh does)",
        );
        Chromium {
            program,
            profile: tempfile::tempdir().expect("a Chromium profile directory"),
        }
    }

    fn run(&self, extra: &[String], url: &str) -> Output {
        let mut command = Command::new(&self.program);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null());
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        assert!(
            output.status.success(),
            "chromium on {url} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The serialized DOM of `url` after its scripts ran for `budget` of
    /// virtual time (timers fire, fetches to the hub complete).
    pub fn dump_dom(&self, url: &str, budget: Duration) -> String {
        let output = self.run(
            &[
                format!("--virtual-time-budget={}", budget.as_millis()),
                "--dump-dom".to_string(),
            ],
            url,
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Renders `url` after `budget` of virtual time into the PNG `path`
    /// (`width` x `height` pixels). Returns the file's size in bytes.
    pub fn screenshot(
        &self,
        url: &str,
        budget: Duration,
        path: &Path,
        width: u32,
        height: u32,
    ) -> u64 {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's directory");
        }
        self.run(
            &[
                format!("--virtual-time-budget={}", budget.as_millis()),
                format!("--window-size={width},{height}"),
                format!("--screenshot={}", path.display()),
            ],
            url,
        );
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()))
            .len()
    }
}

impl Default for Chromium {
    fn default() -> Chromium {
        Chromium::new()
    }
}

/// Where tests keep what they want a person to look at afterwards
/// (`target/test-artifacts/NAME`).
pub fn artifact_path(name: &str) -> PathBuf {
    workspace_root().join("target/test-artifacts").join(name)
}
