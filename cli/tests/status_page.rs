//! The hub's status page (`GET /`) in headless Chromium against a hub with
//! demo traffic, and the JSON 404 of paths the hub does not serve.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fedhub_testkit::*;

const STEP: Duration = Duration::from_secs(30);

struct Hub {
    child: Child,
    http: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub with demo traffic, NullConsumer enabled (slow enough to show a
/// backlog now and then) and one endpoint that nothing listens on.
fn demo_hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("fedhub.toml");
    std::fs::write(
        &path,
        format!(
            "[hub]\nname = \"fedmsg-hub-status\"\n\
             [bus]\ninbound = \"tcp://127.0.0.1:{}\"\n\
             endpoints = {{ \"bodhi.nowhere\" = [\"tcp://127.0.0.1:{}\"] }}\n\
             [http]\nlisten = \"{http}\"\n\
             [consumers.NullConsumer]\nenabled = true\ntopics = [\"*\"]\nsleep_ms = 20\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let child = Command::new(fedhub_binary())
        .args(["run", "--demo", "--demo-rate", "60", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hub = Hub {
        child,
        http,
        _dir: dir,
    };
    assert!(
        wait_until(STEP, || std::net::TcpStream::connect(http).is_ok()
            && http_get(http, "/health/readyz").0 == 200),
        "the hub never became ready"
    );
    hub
}

/// The number in the cell `field` of the row of `consumer` in the dumped DOM.
fn cell(dom: &str, consumer: &str, field: &str) -> f64 {
    let row = dom
        .find(&format!("data-consumer=\"{consumer}\""))
        .unwrap_or_else(|| panic!("no row for {consumer} in {dom}"));
    let marker = format!("data-field=\"{field}\">");
    let start = row + dom[row..].find(&marker).unwrap() + marker.len();
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end]
        .parse()
        .unwrap_or_else(|_| panic!("{field} = {:?}", &dom[start..end]))
}

/// The value of `attribute` on the first element after `anchor`.
fn attribute_after<'a>(dom: &'a str, anchor: &str, attribute: &str) -> &'a str {
    let from = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in {dom}"));
    let marker = format!("{attribute}=\"");
    let start = from + dom[from..].find(&marker).unwrap() + marker.len();
    let end = start + dom[start..].find('"').unwrap();
    &dom[start..end]
}

#[test]
fn the_status_page_draws_each_consumers_backlog_and_its_numbers_move() {
    let hub = demo_hub();
    // A few seconds of history for the chart.
    std::thread::sleep(Duration::from_secs(4));
    let url = format!("http://{}/", hub.http);
    let chromium = Chromium::new();
    let first = chromium.dump_dom(&url, Duration::from_secs(3));

    assert!(first.contains("<h1>fedmsg-hub-status</h1>"), "{first}");
    // Readiness and its reason list.
    assert_eq!(
        attribute_after(&first, "id=\"ready\"", "data-ready"),
        "true"
    );
    // The chart: an SVG polyline over the samples of the last seconds.
    let row = first.find("data-consumer=\"NullConsumer\"").unwrap();
    let points: usize = attribute_after(&first[row..], "<svg", "data-points")
        .parse()
        .unwrap();
    assert!(points >= 3, "{points} samples drawn");
    let polyline = attribute_after(&first[row..], "<polyline", "points");
    assert_eq!(polyline.split(' ').count(), points, "{polyline}");
    // Rates in and out, counters, exceptions.
    assert!(cell(&first, "NullConsumer", "in_rate") > 0.0, "{first}");
    assert!(cell(&first, "NullConsumer", "out_rate") > 0.0);
    assert_eq!(cell(&first, "NullConsumer", "exceptions_total"), 0.0);
    let received = cell(&first, "NullConsumer", "received_total");
    assert!(received > 0.0);
    // Each bus endpoint's connection state.
    assert!(first.contains("data-bus=\"bodhi.nowhere\""), "{first}");
    let endpoint_row = first.find("data-bus=\"bodhi.nowhere\"").unwrap();
    let from = endpoint_row + first[endpoint_row..].find("data-endpoint=").unwrap();
    let text_start = from + first[from..].find('>').unwrap() + 1;
    let text = &first[text_start..text_start + first[text_start..].find('<').unwrap()];
    assert!(
        [": connecting", ": retrying", ": disconnected"]
            .iter()
            .any(|state| text.ends_with(state)),
        "an endpoint nothing listens on: {text}"
    );
    assert!(first.contains("data-bus=\"inbound\""));
    // Links to every endpoint the hub serves.
    for path in ["/metrics", "/state", "/health/readyz", "/health/livez"] {
        assert!(
            first.contains(&format!("<a href=\"{path}\">{path}</a>")),
            "{path}"
        );
    }

    // The numbers move.
    std::thread::sleep(Duration::from_secs(2));
    let second = chromium.dump_dom(&url, Duration::from_secs(3));
    let later = cell(&second, "NullConsumer", "received_total");
    assert!(later > received, "{later} after {received}");

    let png = artifact_path("status-page.png");
    let bytes = chromium.screenshot(&url, Duration::from_secs(3), &png, 1200, 800);
    assert!(bytes > 10_000, "{} is {bytes} bytes", png.display());
}

#[test]
fn the_status_page_is_html_with_no_external_assets() {
    let hub = demo_hub();
    let (status, body) = http_get(hub.http, "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    // Nothing loaded from elsewhere: no scripts, styles or images by URL.
    for external in ["src=", "<link", "href=\"http", "@import", "url("] {
        assert!(!body.contains(external), "{external}");
    }
    assert!(!body.contains("{{"), "every placeholder filled");
    let (status, history) = http_get(hub.http, "/state/history");
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert!(!history["samples"].as_array().unwrap().is_empty());
}

#[test]
fn unknown_paths_answer_a_json_404_listing_the_endpoints() {
    let hub = demo_hub();
    for path in ["/datagrepper/raw", "/nope", "/state/nope"] {
        let (status, body) = http_get(hub.http, path);
        assert_eq!(status, 404, "{path}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
        assert_eq!(json["path"], path);
        let endpoints: Vec<&str> = json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        for expected in ["/", "/metrics", "/state", "/health/readyz"] {
            assert!(endpoints.contains(&expected), "{expected}: {endpoints:?}");
        }
        assert!(json["hint"].as_str().unwrap().contains("enabled"), "{body}");
    }
}
