//! check_fedhub under a real Nagios: the shipped example configuration passes
//! `nagios4 -v`, the shipped NRPE commands parse, and a nagios4 daemon running
//! in the foreground sees a live hub's backlog go CRITICAL -> WARNING -> OK in
//! status.dat.
//!
//! These tests need the nagios4-core package (and monitoring-plugins-basic for
//! check_dummy); without it they fail, they never skip.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INSTALL: &str =
    "install it: apt-get install nagios4-core monitoring-plugins-basic (this test does not skip)";

/// The nagios4 daemon binary.
fn nagios4() -> PathBuf {
    fedhub_testkit::find_program(
        "nagios4",
        &[
            "/usr/sbin/nagios4",
            "/usr/bin/nagios4",
            "/usr/local/bin/nagios4",
        ],
        INSTALL,
    )
}

/// The nagios user's uid and gid.
fn nagios_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("nagios").unwrap();
    // SAFETY: getpwnam gets a valid C string; the result is read before any other call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "no nagios user: {INSTALL}");
    // SAFETY: non-null pointer from getpwnam.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A directory the nagios user owns (Nagios drops privileges to it as root).
fn nagios_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o775)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = nagios_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// Writes nagios.cfg (the keys a test daemon needs) and resource.cfg under
/// `root`, loading `object_files`; returns the nagios.cfg path.
fn write_main_config(root: &Path, object_files: &[PathBuf], user1: &Path) -> PathBuf {
    let var = root.join("var");
    for dir in ["", "rw", "tmp", "spool/checkresults"] {
        nagios_dir(&var.join(dir));
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("resource.cfg"),
        format!("$USER1$={}\n", user1.display()),
    )
    .unwrap();
    let v = var.display();
    let mut cfg = String::new();
    for file in object_files {
        cfg.push_str(&format!("cfg_file={}\n", file.display()));
    }
    cfg.push_str(&format!(
        "log_file={v}/nagios.log
object_cache_file={v}/objects.cache
precached_object_file={v}/objects.precache
resource_file={etc}/resource.cfg
status_file={v}/status.dat
status_update_interval=1
nagios_user=nagios
nagios_group=nagios
check_external_commands=1
command_file={v}/rw/nagios.cmd
lock_file={v}/nagios.lock
temp_file={v}/nagios.tmp
temp_path={v}/tmp
check_result_path={v}/spool/checkresults
query_socket={v}/rw/nagios.qh
state_retention_file={v}/retention.dat
retain_state_information=0
use_retained_scheduling_info=0
interval_length=1
max_service_check_spread=1
max_host_check_spread=1
check_result_reaper_frequency=1
service_inter_check_delay_method=n
host_inter_check_delay_method=n
enable_notifications=0
log_rotation_method=n
use_syslog=0
log_initial_states=1
illegal_macro_output_chars=`~$&|'\"<>
",
        etc = etc.display()
    ));
    let path = etc.join("nagios.cfg");
    fs::write(&path, cfg).unwrap();
    path
}

/// A 24x7 timeperiod, the "admins" contact group (notifications off), a host
/// check that always succeeds, and one host at 127.0.0.1.
fn base_objects(host_extra: &str) -> String {
    let dummy = Path::new("/usr/lib/nagios/plugins/check_dummy");
    let host_check = if dummy.is_file() {
        format!("{} 0 up", dummy.display())
    } else {
        "/bin/true".to_string()
    };
    format!(
        "define timeperiod {{
    timeperiod_name 24x7
    alias           always
    sunday          00:00-24:00
    monday          00:00-24:00
    tuesday         00:00-24:00
    wednesday       00:00-24:00
    thursday        00:00-24:00
    friday          00:00-24:00
    saturday        00:00-24:00
}}
define command {{
    command_name    notify-noop
    command_line    /bin/true
}}
define command {{
    command_name    host-up
    command_line    {host_check}
}}
define contact {{
    contact_name                    nobody
    alias                           nobody
    host_notifications_enabled      0
    service_notifications_enabled   0
    host_notification_period        24x7
    service_notification_period     24x7
    host_notification_options       n
    service_notification_options    n
    host_notification_commands      notify-noop
    service_notification_commands   notify-noop
}}
define contactgroup {{
    contactgroup_name   admins
    alias               admins
    members             nobody
}}
define host {{
    host_name               hub-host
    alias                   fedhub test host
    address                 127.0.0.1
    check_command           host-up
    max_check_attempts      1
    check_interval          5
    retry_interval          1
    check_period            24x7
    notification_interval   0
    notification_period     24x7
    contact_groups          admins
{host_extra}}}
"
    )
}

fn verify(config: &Path) -> (bool, String) {
    let output = Command::new(nagios4())
        .arg("-v")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("nagios4 -v runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn the_example_objects_pass_nagios4_verification() {
    let dir = open_tempdir();
    let base = dir.path().join("base.cfg");
    fs::write(&base, base_objects("    hostgroups fedmsg-hubs\n")).unwrap();
    let config = write_main_config(
        dir.path(),
        &[base.clone(), example("services.cfg")],
        Path::new("/usr/lib/nagios/plugins"),
    );
    let (ok, text) = verify(&config);
    assert!(ok, "nagios4 -v failed:\n{text}");
    assert!(text.contains("Total Errors:   0"), "{text}");
    assert!(text.contains("Total Warnings: 0"), "{text}");
    assert!(text.contains("Checked 10 services."), "{text}");

    // The same verification rejects a broken file, so passing means something.
    let broken = dir.path().join("broken.cfg");
    fs::write(
        &broken,
        "define service {\n    use fedhub-service\n    hostgroup_name fedmsg-hubs\n    service_description broken\n    check_command check_missing_command\n}\n",
    )
    .unwrap();
    let config = write_main_config(
        dir.path(),
        &[base, example("services.cfg"), broken],
        Path::new("/usr/lib/nagios/plugins"),
    );
    let (ok, text) = verify(&config);
    assert!(!ok, "a missing command must fail verification:\n{text}");
    assert!(text.contains("check_missing_command"), "{text}");
}

#[test]
fn every_example_nrpe_command_parses() {
    let text = fs::read_to_string(example("nrpe.cfg")).unwrap();
    let empty = open_tempdir();
    let socket_dir = empty.path().display().to_string();
    let closed = format!("127.0.0.1:{}", closed_port());
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("command[")) {
        let (name, command) = line.split_once("]=").expect("command[name]=...");
        let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        assert!(
            words[0].ends_with("/check_fedhub"),
            "{name}: runs {}",
            words[0]
        );
        words.remove(0);
        let fedora = words[0] != "-H";
        if fedora {
            words.extend(["--socket-dir".into(), socket_dir.clone()]);
        } else {
            words[1] = closed.clone();
        }
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        let run = check(&args);
        let line = run.line();
        assert_eq!(run.code, 3, "{name}: {line}");
        if fedora {
            assert!(
                line == "UNKNOWN - socket file does not exists"
                    || (line.starts_with(&format!("UNKNOWN - {socket_dir}/monitoring-"))
                        && line.ends_with(".socket does not exist")),
                "{name}: {line}"
            );
        } else {
            assert!(
                line.contains(&format!("UNKNOWN - cannot connect to the hub at {closed}")),
                "{name}: {line}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 27, "commands in nrpe.cfg");
}

/// One service's entry in status.dat.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    state: u8,
    checked: bool,
    output: String,
}

/// Reads the services of status.dat (None while it does not exist yet).
fn read_status(path: &Path) -> Option<HashMap<String, Status>> {
    let text = fs::read_to_string(path).ok()?;
    let mut services = HashMap::new();
    for block in text.split("servicestatus {").skip(1) {
        let block = block.split('}').next().unwrap_or_default();
        let mut fields = HashMap::new();
        for line in block.lines() {
            if let Some((key, value)) = line.trim().split_once('=') {
                fields.insert(key.to_string(), value.to_string());
            }
        }
        let (Some(name), Some(state)) = (
            fields.get("service_description"),
            fields.get("current_state").and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        services.insert(
            name.clone(),
            Status {
                state,
                checked: fields.get("has_been_checked").map(String::as_str) == Some("1"),
                output: fields.get("plugin_output").cloned().unwrap_or_default(),
            },
        );
    }
    Some(services)
}

/// The foreground daemon; SIGTERM (then SIGKILL) when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling the child this test started, by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn service(name: &str, command: &str) -> String {
    format!(
        "define service {{
    host_name               hub-host
    service_description     {name}
    check_command           {command}
    max_check_attempts      1
    check_interval          1
    retry_interval          1
    check_period            24x7
    notification_interval   0
    notification_period     24x7
    contact_groups          admins
}}
"
    )
}

#[test]
fn a_nagios4_daemon_sees_the_backlog_go_critical_warning_ok() {
    let nagios = nagios4();
    // The hub: a NullConsumer taking 6 ms a message, so 3000 messages drain
    // over about 18 s: CRITICAL above 2000, WARNING above 1000, then OK.
    let bus = Bus::new();
    let mut config = hub_config(&bus, "tcp://127.0.0.1:*", null_settings(6.0, 0));
    config.monitoring.interval_secs = 0.5;
    let hub = start_hub(&bus, config, vec![]);
    let http_port = hub.http_addr().unwrap().port();
    let monitoring = hub.monitoring_endpoint().unwrap().to_string();

    let dir = open_tempdir();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = bin.join("check_fedhub");
    fs::copy(CHECK, &plugin).unwrap();
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();

    let objects = dir.path().join("objects.cfg");
    let mut text = base_objects("");
    text.push_str(
        "define command {
    command_name    check_fedhub_http_consumer
    command_line    $USER1$/check_fedhub -H $HOSTADDRESS$:$ARG1$ -C $ARG2$ -w $ARG3$ -c $ARG4$
}
define command {
    command_name    check_fedhub_fedora_backlog
    command_line    $USER1$/check_fedhub backlog $ARG1$ $ARG2$ $ARG3$ $ARG4$ --socket $ARG5$ -t 5
}
",
    );
    text.push_str(&service(
        "fedhub_backlog",
        &format!("check_fedhub_http_consumer!{http_port}!NullConsumer!1000!2000"),
    ));
    text.push_str(&service(
        "fedmsg_backlog",
        &format!("check_fedhub_fedora_backlog!fedmsg-hub!NullConsumer!1000!2000!{monitoring}"),
    ));
    fs::write(&objects, text).unwrap();
    let main = write_main_config(dir.path(), &[objects], &bin);
    let (ok, text) = verify(&main);
    assert!(ok, "nagios4 -v failed:\n{text}");

    let log = fs::File::create(dir.path().join("nagios.out")).unwrap();
    let child = Command::new(&nagios)
        .arg(&main)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("nagios4 starts");
    let mut daemon = Daemon { child };
    let status_file = dir.path().join("var/status.dat");
    let names = ["fedhub_backlog", "fedmsg_backlog"];
    let diagnostics = |dir: &Path| {
        format!(
            "nagios output:\n{}\nnagios.log:\n{}",
            fs::read_to_string(dir.join("nagios.out")).unwrap_or_default(),
            fs::read_to_string(dir.join("var/nagios.log")).unwrap_or_default()
        )
    };

    // Both services checked once, OK on the idle hub, before the burst.
    let idle = wait_until(Duration::from_secs(20), || {
        read_status(&status_file).is_some_and(|s| {
            names
                .iter()
                .all(|n| s.get(*n).is_some_and(|st| st.checked && st.state == 0))
        })
    });
    assert!(
        idle,
        "nagios never reported both services OK on the idle hub: {:?}\n{}",
        read_status(&status_file),
        diagnostics(dir.path())
    );

    bus.burst("nagios", 3000);
    let mut seen: HashMap<&str, Vec<(u8, String)>> = HashMap::new();
    let wanted = [2u8, 1, 0];
    let done = |seen: &HashMap<&str, Vec<(u8, String)>>| {
        names.iter().all(|n| {
            let states: Vec<u8> = seen
                .get(n)
                .map(|v| v.iter().map(|(s, _)| *s).collect())
                .unwrap_or_default();
            contains_in_order(&states, &wanted)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline && !done(&seen) {
        if let Some(status) = read_status(&status_file) {
            for name in names {
                if let Some(st) = status.get(name) {
                    let history = seen.entry(name).or_default();
                    if history.last().map(|(s, _)| *s) != Some(st.state) {
                        history.push((st.state, st.output.clone()));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let final_status = read_status(&status_file);
    let stopped = daemon.stop();
    assert!(
        done(&seen),
        "expected CRITICAL -> WARNING -> OK for {names:?}, saw {seen:#?}\nlast status.dat: {final_status:?}\n{}",
        diagnostics(dir.path())
    );
    assert!(
        stopped.is_some(),
        "nagios4 did not stop on SIGTERM within 10 s"
    );
    // What the operator saw, word for word.
    let http = &seen["fedhub_backlog"];
    let fedora = &seen["fedmsg_backlog"];
    for (state, output) in http {
        let word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][*state as usize];
        assert!(
            output.starts_with(&format!("FEDHUB BACKLOG {word} - NullConsumer backlog ")),
            "{output}"
        );
    }
    for (state, output) in fedora {
        let word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][*state as usize];
        assert!(
            output.starts_with(&format!(
                "{word}: fedmsg consumer NullConsumer backlog value is "
            )),
            "{output}"
        );
    }
    let log = fs::read_to_string(dir.path().join("var/nagios.log")).unwrap_or_default();
    assert!(
        log.contains("SERVICE ALERT: hub-host;fedhub_backlog;CRITICAL;HARD;1;FEDHUB BACKLOG CRITICAL - NullConsumer backlog "),
        "{log}"
    );
    drop(hub);
}

/// Whether `wanted` occurs in `states` in order (not necessarily adjacent).
fn contains_in_order(states: &[u8], wanted: &[u8]) -> bool {
    let mut want = wanted.iter().peekable();
    for s in states {
        if want.peek() == Some(&s) {
            want.next();
        }
    }
    want.peek().is_none()
}
