//! Demo traffic and the web pages: `fedhub run --demo`'s publisher feeding a hub
//! running the history store and StatsConsumer on their embedded defaults; every
//! built-in plugin shows data within a minute; then each page of examples/web,
//! served from another origin, loaded in headless Chromium (the DOM after its
//! scripts ran, and a screenshot kept as a test artifact).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::get;
use fedhub::{HubBuilder, RunningHub};
use fedhub_testkit::{artifact_path, free_port, section, workspace_root, Chromium, TestBus};
use serde_json::json;

struct Demo {
    hub: Option<RunningHub>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    _bus: TestBus,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(hub) = self.hub.take() {
            hub.shutdown();
        }
    }
}

/// A hub on its embedded defaults (databases in a temporary directory), fed
/// by the demo publisher at `rate` msg/s.
fn demo(rate: f64) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.bus.inbound = format!("tcp://127.0.0.1:{}", free_port());
    config.hub.shutdown_grace_secs = 5;
    let path = |name: &str| json!(dir.path().join(name).display().to_string());
    config.consumers.insert(
        "Nommer".into(),
        section(&[("database", path("history.sqlite"))]),
    );
    config.consumers.insert(
        "StatsConsumer".into(),
        section(&[
            ("database", path("stats.sqlite")),
            ("history_database", path("history.sqlite")),
        ]),
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .consumer(fedhub_statscache::factory())
        .with_embedded_defaults()
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let inbound = hub.inbound_endpoint().expect("inbound socket").to_string();
    fedhub_tools::demo::spawn_demo_publisher(
        &inbound,
        rate,
        "org.fedoraproject",
        "prod",
        stop.clone(),
    )
    .unwrap();
    Demo {
        hub: Some(hub),
        addr,
        stop,
        _bus: bus,
        _dir: dir,
    }
}

/// The idents that have no row yet.
fn empty_plugins(addr: SocketAddr) -> Vec<String> {
    let index = get(addr, "/statscache/api/", None).json();
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ident"].as_str().unwrap().to_string())
        .filter(|ident| {
            let r = get(
                addr,
                &format!("/statscache/api/{ident}?rows_per_page=1&stop=9999999999"),
                None,
            );
            r.status != 200 || r.json().as_array().is_none_or(|a| a.is_empty())
        })
        .collect()
}

#[test]
fn demo_traffic_shows_every_plugin_within_a_minute() {
    let demo = demo(100.0);
    let began = Instant::now();
    let mut empty = empty_plugins(demo.addr);
    while !empty.is_empty() && began.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        empty = empty_plugins(demo.addr);
    }
    assert!(
        empty.is_empty(),
        "no data after a minute of demo traffic: {empty:?}"
    );
    println!(
        "every plugin has data after {:.1} s of demo traffic",
        began.elapsed().as_secs_f64()
    );
}

/// Serves examples/web on 127.0.0.1 (another origin than the hub's).
fn serve_examples() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let root = workspace_root().join("examples/web");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let file = root.join(path.trim_start_matches('/'));
            let mut stream = stream;
            match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(&body);
                }
                _ => {
                    let _ = write!(
                        stream,
                        "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                    );
                }
            }
        }
    });
    addr
}

#[test]
fn web_pages_render_hub_data_in_chromium() {
    let demo = demo(200.0);
    let hub = format!("http://{}", demo.addr);
    // Data for every plugin first (the pages read the releng, contributions and history data).
    let began = Instant::now();
    while !empty_plugins(demo.addr).is_empty() && began.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let site = serve_examples();
    let chromium = Chromium::new();
    let budget = Duration::from_secs(10);

    let url = format!("http://{site}/dashboard.html?hub={hub}");
    let dom = chromium.dump_dom(&url, budget);
    let shown: u32 = dom
        .split("<p id=\"status\">")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the dashboard did not load: {dom}"));
    assert!(shown > 0, "{dom}");
    for group in [
        "group-compose",
        "group-updates",
        "group-amis",
        "group-livecd",
    ] {
        assert!(dom.contains(group), "{group} missing");
    }
    assert!(
        dom.contains("synced out"),
        "an updates sync is shown: {dom}"
    );
    let composes = dom
        .split("id=\"group-compose\"")
        .nth(1)
        .unwrap()
        .split("id=\"group-updates\"")
        .next()
        .unwrap();
    assert!(
        composes.contains("class=\"event success") || composes.contains("class=\"event info"),
        "a compose event is shown: {composes}"
    );
    chromium.screenshot(
        &url,
        budget,
        &artifact_path("statscache-dashboard.png"),
        1280,
        900,
    );

    let url = format!("http://{site}/calendar.html?hub={hub}&user=ralph");
    let dom = chromium.dump_dom(&url, budget);
    let total: u64 = dom
        .split("<p id=\"summary\">")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the calendar did not load: {dom}"));
    let api_total = common::total_volume(demo.addr, "contributions-per-user-1d", "&user=ralph");
    assert!(total > 0, "{dom}");
    // The page read while traffic kept coming: it shows at most what the API has now.
    assert!(total as i64 <= api_total, "page {total}, API {api_total}");
    let days = dom.matches("class=\"day").count();
    assert!((365..=371).contains(&days), "a year of days: {days}");
    assert!(dom.contains("class=\"day l"), "some day is coloured");
    chromium.screenshot(
        &url,
        budget,
        &artifact_path("statscache-calendar.png"),
        1000,
        300,
    );

    let url = format!("http://{site}/widget.html?hub={hub}");
    let dom = chromium.dump_dom(&url, budget);
    std::fs::write(artifact_path("datagrepper-widget.html"), &dom).unwrap();
    let items = dom.matches("class=\"fedhub-widget-item\"").count();
    assert!(items >= 2, "both widgets list activity: {dom}");
    let user_part = dom
        .split("id=\"user-activity\"")
        .nth(1)
        .unwrap()
        .split("id=\"package-activity\"")
        .next()
        .unwrap();
    assert!(
        user_part.contains("fedhub-widget-item"),
        "ralph's widget rendered: {user_part}"
    );
    chromium.screenshot(
        &url,
        budget,
        &artifact_path("datagrepper-widget.png"),
        900,
        700,
    );
}
