//! Two hubs, one PostgreSQL database (a throwaway cluster): a preference
//! changed through hub A's API takes effect on hub B through the bus message
//! A publishes, and B's next notification follows the new rules. Prints the
//! time from the API call to the change taking effect on each hub.

mod common;

use std::time::{Duration, Instant};

use common::{api, build, next, send, subscribe, TOKEN};
use fedhub::HubBuilder;
use fedhub_testkit::{wait_until, PgCluster, TestBus};
use serde_json::json;

const RALPH: &str = "ralph.id.fedoraproject.org";

fn has_filter(addr: std::net::SocketAddr, name: &str) -> bool {
    let (status, cached) = api(addr, "GET", &format!("/cache/{RALPH}"), None, None);
    status == 200
        && cached["preferences"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["filters"].as_array().unwrap())
            .any(|f| f["name"] == name)
}

#[test]
fn a_change_through_hub_a_takes_effect_on_hub_b() {
    let cluster = PgCluster::start();
    let url = cluster.create_database("fmn");
    let dir = tempfile::tempdir().unwrap();
    let ownership = common::ownership_file(dir.path());
    let bus = TestBus::new();
    let hub_a = HubBuilder::new(common::config(&bus, &url, &ownership, &[]))
        .consumer(fedhub_notifications::factory())
        .start()
        .unwrap();
    bus.wait_subscribed();
    // Hub B follows the test bus and hub A's PUB socket.
    let mut config_b = common::config(&bus, &url, &ownership, &[]);
    config_b.bus.endpoints.insert(
        "hub-a".into(),
        fedhub::OneOrMany::Many(vec![hub_a.publish_endpoints()[0].clone()]),
    );
    let hub_b = HubBuilder::new(config_b)
        .consumer(fedhub_notifications::factory())
        .start()
        .unwrap();
    let (a, b) = (hub_a.http_addr().unwrap(), hub_b.http_addr().unwrap());
    let (_ctx, sub_b) = subscribe(&hub_b, "org.fedoraproject.prod.fmn.notification");
    // B is connected to A once a message A publishes reaches B's consumer.
    let before = common::handled(b);
    assert!(
        wait_until(Duration::from_secs(10), || {
            hub_a.publisher().publish("fmn.probe", json!({})).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            common::handled(b) > before
        }),
        "hub B receives what hub A publishes"
    );

    // B follows the test bus too (the bus forwards only the first subscription).
    let before = common::handled(b);
    assert!(
        wait_until(Duration::from_secs(10), || {
            send(&bus, "test.probe", "probe", json!({}));
            std::thread::sleep(Duration::from_millis(20));
            common::handled(b) > before
        }),
        "hub B receives the test bus"
    );

    // The user is created through A; B learns of it from A's announcement.
    let user = json!({"openid": RALPH, "email": "ralph@example.org"});
    assert_eq!(api(a, "POST", "/users", Some(TOKEN), Some(user)).0, 200);
    assert!(wait_until(Duration::from_secs(10), || api(
        b,
        "GET",
        &format!("/cache/{RALPH}"),
        None,
        None
    )
    .0 == 200));

    let mut timings = Vec::new();
    for round in 0..5 {
        let name = format!("requests {round}");
        let filter = json!({"name": name, "rules": [{"code_path": "fmn.rules:package_filter", "arguments": {"package": format!("python-requests{round}")}}]});
        let began = Instant::now();
        let (status, body) = api(
            a,
            "POST",
            &format!("/users/{RALPH}/email/filters"),
            Some(TOKEN),
            Some(filter),
        );
        assert_eq!(status, 200, "{body}");
        let on_a = began.elapsed();
        assert!(
            has_filter(a, &name),
            "hub A applies its own change before answering"
        );
        assert!(
            wait_until(Duration::from_secs(10), || has_filter(b, &name)),
            "hub B never loaded {name:?}"
        );
        let on_b = began.elapsed();
        timings.push((on_a, on_b));
        // B's next notification follows the new rules.
        send(
            &bus,
            "buildsys.build.state.change",
            &format!("b{round}"),
            build("kevin", &format!("python-requests{round}"), 1),
        );
        let (_, n) = next(&sub_b, "fmn.notification");
        assert_eq!(n["msg"]["filter"], name.as_str(), "{n}");
        assert_eq!(n["msg"]["msg_id"], format!("b{round}"));
    }
    for (round, (on_a, on_b)) in timings.iter().enumerate() {
        println!(
            "preference change {round}: in effect on hub A after {:.1} ms, on hub B after {:.1} ms (API call to B's cache showing it, polled every 10 ms)",
            on_a.as_secs_f64() * 1e3,
            on_b.as_secs_f64() * 1e3
        );
    }
    hub_b.shutdown();
    hub_a.shutdown();
}
