//! A throwaway PostgreSQL server for tests: Debian's `initdb` and `pg_ctl` (package
//! `postgresql`) run a cluster in a temporary directory, listening on a free
//! port on 127.0.0.1 and on a unix socket in that directory.
//!
//! PostgreSQL refuses to run as root, and the tests run as root here and in CI:
//! when the process is root, the directory is handed to `nobody` and every
//! PostgreSQL program runs through `runuser -u nobody`. As any other user the
//! programs run as that user.
//!
//! Local (unix socket) connections are trusted; TCP connections need the
//! password ([`PgCluster::PASSWORD`]), so a test can also try wrong credentials.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The superuser of every test cluster.
pub const PG_USER: &str = "postgres";

/// A running (or stopped, see [`PgCluster::stop`]) PostgreSQL cluster in a temp
/// dir. Dropping it stops the server and deletes the directory.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    running: bool,
    database: String,
}

impl PgCluster {
    /// The superuser's password (TCP connections need it).
    pub const PASSWORD: &'static str = "fedhub-test-secret";

    /// Creates a cluster, starts it and creates the database `fedhub`.
    /// Panics (the test fails) when PostgreSQL is not installed, naming the
    /// Debian package.
    pub fn start() -> PgCluster {
        PgCluster::start_with("")
    }

    /// Like [`start`](Self::start), with `settings` (postgresql.conf lines)
    /// after the test defaults, which they override: a benchmark gives the
    /// server PostgreSQL's own defaults (`shared_buffers = 128MB`) rather than
    /// the small footprint that lets many test clusters run at once.
    pub fn start_with(settings: &str) -> PgCluster {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("fedhub-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        let run_as = if is_root() { Some("nobody") } else { None };
        if run_as.is_some() {
            // The server runs as nobody: it must own its directory.
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
                .expect("chown the PostgreSQL directory to nobody");
        }
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{}\n", Self::PASSWORD)).unwrap();
        if run_as.is_some() {
            std::os::unix::fs::chown(&password_file, Some(65534), Some(65534)).unwrap();
        }
        let mut cluster = PgCluster {
            bin,
            port: crate::free_port(),
            run_as,
            running: false,
            database: "fedhub".into(),
            dir,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                PG_USER,
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", path_str(&password_file)),
            ],
        );
        let settings_extra = settings;
        let settings = format!(
            "\n# fedhub test cluster\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 60\nshared_buffers = 16MB\n",
            cluster.port,
            path_str(cluster.dir.path())
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("initdb wrote postgresql.conf");
        text.push_str(&settings);
        text.push_str(&format!(
            "\n{settings_extra}\n",
            settings_extra = settings_extra
        ));
        std::fs::write(&conf, text).unwrap();
        cluster.start_server();
        let database = cluster.database.clone();
        cluster.create_database(&database);
        cluster
    }

    /// The database created at start, as a `postgres://` URL over TCP with the password.
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }

    /// A `postgres://` URL for `database` on this cluster (TCP, with the password).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}:{}@127.0.0.1:{}/{database}",
            Self::PASSWORD,
            self.port
        )
    }

    /// A URL for `database` over the cluster's unix socket (no password needed).
    pub fn socket_url_for(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}@/{database}?host={}&port={}",
            path_str(self.dir.path()),
            self.port
        )
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates another database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.run(
            "createdb",
            &[
                "-h",
                path_str(self.dir.path()),
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
                name,
            ],
        );
        self.url_for(name)
    }

    /// Runs `sql` with psql as the superuser in `database`; returns its output
    /// (unaligned, tuples only). Panics when psql fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self.run(
            "psql",
            &[
                "-h",
                path_str(self.dir.path()),
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (`pg_ctl stop -m fast`): clients see their connections
    /// closed and new ones refused, as in an outage.
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data_dir();
            self.run(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "fast", "-w", "stop"],
            );
            self.running = false;
        }
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn restart(&mut self) {
        if !self.running {
            self.start_server();
        }
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn start_server(&mut self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        self.running = true;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a PostgreSQL program (as nobody when root); panics with its output when it fails.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .env("PGPASSWORD", Self::PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed ({}):\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let path = self.bin.join("pg_ctl");
            let mut command = match self.run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", user, "--"]).arg(&path);
                    c
                }
                None => Command::new(&path),
            };
            let _ = command
                .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }
}

/// The directory of Debian's PostgreSQL programs (`/usr/lib/postgresql/<major>/bin`,
/// the newest major). Panics naming the Debian package when it is missing.
pub fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((major, bin)) => {
            assert!(
                major >= 13,
                "PostgreSQL {major} is too old: fedhub needs 13 or later (Debian package `postgresql`)"
            );
            bin
        }
        None => panic!(
            "PostgreSQL's initdb and pg_ctl were not found under /usr/lib/postgresql/*/bin: \
             install the Debian package `postgresql` (scripts/test.sh does); this test does not skip"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_stops_and_starts_again() {
        let mut pg = PgCluster::start();
        assert_eq!(pg.psql("fedhub", "SELECT 1 + 1"), "2");
        let url = pg.url();
        assert!(url.starts_with("postgres://postgres:"), "{url}");
        assert!(url.ends_with("/fedhub"), "{url}");
        let version: u32 = pg
            .psql("fedhub", "SHOW server_version_num")
            .parse()
            .unwrap();
        assert!(version >= 130000, "{version}");
        pg.stop();
        assert!(!pg.is_running());
        pg.restart();
        assert_eq!(pg.psql("fedhub", "SELECT 'back'"), "back");
        let dir = pg.dir().to_path_buf();
        drop(pg);
        assert!(!dir.exists(), "the cluster's directory is deleted on drop");
    }
}
