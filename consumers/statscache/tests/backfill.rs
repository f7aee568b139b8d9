//! Restarting StatsConsumer beside the history store: the open windows are
//! recomputed from the history store, messages stored while statistics were
//! off are counted, and messages arriving during the backfill are counted
//! exactly once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fedhub_testkit::wait_until;
use serde_json::json;

fn sections<'a>(history: &Path, stats: &Path) -> Vec<(&'a str, Vec<(&'a str, serde_json::Value)>)> {
    vec![
        (
            "Nommer",
            vec![
                ("database", json!(history.display().to_string())),
                ("batch_latency_ms", json!(10)),
            ],
        ),
        (
            "StatsConsumer",
            vec![
                ("database", json!(stats.display().to_string())),
                ("history_database", json!(history.display().to_string())),
                ("flush_interval_ms", json!(50)),
                ("backfill_overlap_secs", json!(600.0)),
            ],
        ),
    ]
}

fn count(addr: std::net::SocketAddr) -> u64 {
    get(addr, "/datagrepper/messagecount", None).json()["messagecount"]
        .as_u64()
        .unwrap()
}

#[test]
fn restart_recomputes_open_windows_once() {
    let dir = tempfile::tempdir().unwrap();
    let (history, stats) = (
        dir.path().join("history.sqlite"),
        dir.path().join("stats.sqlite"),
    );
    let now = fedhub_statscache::now_secs();
    let first = corpus(60, now - 300.0, 1.0, "11111111");
    let middle = corpus(40, now - 200.0, 1.5, "22222222");
    let late = corpus(20, now - 100.0, 2.0, "33333333");
    let mut all = Vec::new();

    // 1. Both consumers see the first messages.
    {
        let (hub, bus, addr) = start_hub(
            &sections(&history, &stats),
            vec![fedhub_history::factory(), fedhub_statscache::factory()],
        );
        publish(&bus, &first);
        all.extend(first.iter().cloned());
        assert!(wait_until(Duration::from_secs(30), || total_volume(
            addr,
            "volume-1m",
            ""
        ) == 60
            && count(addr) == 60));
        hub.shutdown();
    }
    // 2. Statistics are off: only the history store sees these.
    {
        let (hub, bus, addr) = start_hub(
            &sections(&history, &stats)[..1],
            vec![fedhub_history::factory()],
        );
        publish(&bus, &middle);
        all.extend(middle.iter().cloned());
        assert!(wait_until(Duration::from_secs(30), || count(addr) == 100));
        hub.shutdown();
    }
    // 3. Statistics again: the backfill recomputes the open windows and adds
    //    the missed messages, while messages timestamped before the start
    //    (delivered late) and new ones arrive live.
    let (hub, bus, addr) = start_hub(
        &sections(&history, &stats),
        vec![fedhub_history::factory(), fedhub_statscache::factory()],
    );
    publish(&bus, &late);
    all.extend(late.iter().cloned());
    let fresh = corpus(30, fedhub_statscache::now_secs() + 1.0, 0.1, "44444444");
    publish(&bus, &fresh);
    all.extend(fresh.iter().cloned());
    let expected = all.len() as i64;
    assert!(
        wait_until(Duration::from_secs(30), || {
            get(addr, "/statscache/api/_backfill", None).json()["status"] == "done"
                && count(addr) == expected as u64
        }),
        "backfill: {}",
        get(addr, "/statscache/api/_backfill", None).body
    );
    std::thread::sleep(Duration::from_millis(300)); // the last flush
    for (ident, secs) in [
        ("volume-1m", 60),
        ("volume-1h", 3600),
        ("volume-1d", 86_400),
    ] {
        let mut want = std::collections::BTreeMap::new();
        for m in &all {
            *want
                .entry(bucket(m.timestamp.unwrap(), secs))
                .or_insert(0i64) += 1;
        }
        let got: std::collections::BTreeMap<i64, i64> = all_rows(addr, ident, "&stop=9999999999")
            .iter()
            .map(|r| {
                (
                    r["timestamp"].as_f64().unwrap() as i64,
                    r["volume"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{ident}");
    }
    let progress = get(addr, "/statscache/api/_backfill", None).json();
    assert!(
        progress["replayed_messages"].as_u64().unwrap() >= 40,
        "{progress}"
    );
    // The same progress in /state, under the consumer's own counters.
    let state: serde_json::Value = serde_json::from_str(&get(addr, "/state", None).body).unwrap();
    let entry = state["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "StatsConsumer")
        .unwrap()
        .clone();
    let counters = &entry["counters"];
    assert_eq!(counters["backfill_finished"], 1, "{entry}");
    assert_eq!(
        counters["backfill_replayed_messages"], progress["replayed_messages"],
        "{entry}"
    );
    assert_eq!(
        counters["backfill_total_messages"], progress["total_messages"],
        "{entry}"
    );
    hub.shutdown();
}
