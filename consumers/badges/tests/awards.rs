//! Matching and awards on real databases: the history store and Tahrir's
//! tables in SQLite files, and Tahrir's tables on a real PostgreSQL server
//! shared by two "hubs" (two connection pools).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use fedhub_badges::expr::Sandbox;
use fedhub_badges::load_dir;
use serde_json::{json, Value};

fn build(owner: &str, id: &str, new: u64) -> Value {
    body(
        "buildsys.build.state.change",
        id,
        now(),
        json!({"owner": owner, "name": "kernel", "version": "6.1", "release": "1.fc41", "new": new, "build_id": 1, "instance": "primary"}),
    )
}

#[test]
fn the_ten_example_rules_load() {
    let set = load_dir(&example_rules(), &Sandbox::default()).unwrap();
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    assert_eq!(set.rules.len(), 10);
    let kinds = fedhub_badges::rules::trigger_kinds(&set.rules);
    for kind in ["topic", "category", "expression"] {
        assert!(
            kinds.contains_key(kind),
            "the examples use {kind} triggers: {kinds:?}"
        );
    }
}

#[test]
fn a_build_earns_its_badge_once_published_with_the_award_in_tahrirs_tables() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(dir.path());
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let (mut awarder, _) = awarder(&example_rules(), history.clone(), tahrir.clone());
    let published: Published = Arc::default();
    let p = published.clone();
    let publish = move |topic: &str, msg: Value| -> Result<(), String> {
        p.lock().unwrap().push((topic.to_string(), msg));
        Ok(())
    };

    // A failed build triggers nothing (the expression in the trigger).
    let failed = build("ralph", "2026-a0", 3);
    store(&*history, &failed);
    let outcome = awarder.handle(
        failed["topic"].as_str().unwrap(),
        &failed,
        std::time::SystemTime::now(),
        &publish,
    );
    assert!(
        outcome.awards.is_empty() && outcome.errors.is_empty(),
        "{outcome:?}"
    );

    // The first completed build: its own row is the one counted.
    let first = build("ralph", "2026-a1", 1);
    store(&*history, &first);
    let outcome = awarder.handle(
        first["topic"].as_str().unwrap(),
        &first,
        std::time::SystemTime::now(),
        &publish,
    );
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.awards.len(), 1, "{outcome:?}");
    assert_eq!(outcome.awards[0].badge_id, "like-a-rock-builds-i");
    assert_eq!(outcome.awards[0].user, "ralph");
    // The leaderboard follows in a pass (the consumer's RankProducer runs them).
    assert_eq!(awarder.ranks().pending(), 1);
    let pass = awarder.ranks().update(&publish).unwrap();
    assert_eq!((pass.winners, pass.advances), (1, 1), "{pass:?}");
    assert_eq!(awarder.ranks().pending(), 0);
    {
        let published = published.lock().unwrap();
        let (topic, award) = &published[0];
        assert_eq!(topic, "fedbadges.badge.award");
        assert_eq!(award["badge"]["badge_id"], "like-a-rock-builds-i");
        assert_eq!(award["badge"]["name"], "Like a Rock (Builds I)");
        assert_eq!(award["user"]["username"], "ralph");
        assert!(award["user"]["badges_user_id"].as_i64().unwrap() > 0);
        let (topic, rank) = &published[1];
        assert_eq!(topic, "fedbadges.person.rank.advance");
        assert_eq!(rank["person"]["nickname"], "ralph");
        assert_eq!(rank["person"]["rank"], 1);
        assert_eq!(rank["old_rank"], Value::Null);
    }
    let person = tahrir.person_badges("ralph").unwrap().unwrap();
    assert_eq!(person["count"], 1);
    assert_eq!(
        person["badges"][0]["issued_for"],
        "http://hub.example.org/datagrepper/id?id=2026-a1&is_raw=true&size=extra-large"
    );

    // More builds: the ninth completed one is ralph's tenth build message
    // (the failed build counts, as datanommer counts every state change on
    // the topic) and earns the second badge; none earns the first again.
    for n in 2..=10 {
        let b = build("ralph", &format!("2026-a{n}"), 1);
        store(&*history, &b);
        let outcome = awarder.handle(
            b["topic"].as_str().unwrap(),
            &b,
            std::time::SystemTime::now(),
            &publish,
        );
        let expected: Vec<&str> = if n == 9 {
            vec!["like-a-rock-builds-ii"]
        } else {
            vec![]
        };
        let got: Vec<&str> = outcome.awards.iter().map(|a| a.badge_id.as_str()).collect();
        assert_eq!(got, expected, "build {n}");
    }
    // Replaying the first message changes nothing (msg_id already seen), and
    // a fresh awarder (a restart) finds the holders in the database.
    let replay = awarder.handle(
        first["topic"].as_str().unwrap(),
        &first,
        std::time::SystemTime::now(),
        &publish,
    );
    assert!(replay.duplicate);
    let (mut restarted, _) = common::awarder(&example_rules(), history.clone(), tahrir.clone());
    let again = restarted.handle(
        first["topic"].as_str().unwrap(),
        &first,
        std::time::SystemTime::now(),
        &publish,
    );
    assert!(again.awards.is_empty(), "{again:?}");
    assert_eq!(tahrir.assertion_count().unwrap(), 2);
    let holders = tahrir
        .badge_holders("like-a-rock-builds-ii")
        .unwrap()
        .unwrap();
    assert_eq!(holders["holders"][0]["user"], "ralph");
    let awards: usize = published
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "fedbadges.badge.award")
        .count();
    assert_eq!(awards, 2, "one message per award");
}

#[test]
fn opted_out_people_banned_users_and_ip_names_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(dir.path());
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let rules = tempfile::tempdir().unwrap();
    // No recipient: the message's users, minus banned system users.
    std::fs::write(
        rules.path().join("any-build.yml"),
        rule(
            "Any Build",
            "  topic: buildsys.build.state.change",
            "  datanommer:\n    filter: {topics: [\"%(topic)s\"]}\n    operation: count\n    condition: {greater than: 0}",
            "",
        ),
    )
    .unwrap();
    let (mut awarder, _) = awarder(rules.path(), history.clone(), tahrir.clone());
    tahrir.set_opt_out("pingou", true).unwrap();
    let publish = |_: &str, _: Value| -> Result<(), String> { Ok(()) };
    for (k, owner) in ["koji", "pingou", "10.0.0.5", "192.168.1.9", "kevin"]
        .iter()
        .enumerate()
    {
        let b = build(owner, &format!("2026-b{k}"), 1);
        store(&*history, &b);
        let outcome = awarder.handle(
            b["topic"].as_str().unwrap(),
            &b,
            std::time::SystemTime::now(),
            &publish,
        );
        let expected = if *owner == "kevin" { 1 } else { 0 };
        assert_eq!(outcome.awards.len(), expected, "{owner}: {outcome:?}");
    }
}

#[test]
fn a_rule_that_fails_is_skipped_and_counted_and_a_failed_publish_awards_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(dir.path());
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let rules = tempfile::tempdir().unwrap();
    let criteria = "  datanommer:\n    filter: {topics: [\"%(topic)s\"]}\n    operation: count\n    condition: {greater than: 0}";
    std::fs::write(
        rules.path().join("missing.yml"),
        rule(
            "Missing Field",
            "  topic: buildsys.build.state.change",
            criteria,
            "recipient: \"%(msg.submitter.name)s\"",
        ),
    )
    .unwrap();
    std::fs::write(
        rules.path().join("slow.yml"),
        rule(
            "Slow Expression",
            "  expression: '[1,2,3,4,5,6,7,8,9,10].map(|x8| [1,2,3,4,5,6,7,8,9,10].map(|x7| [1,2,3,4,5,6,7,8,9,10].map(|x6| [1,2,3,4,5,6,7,8,9,10].map(|x5| [1,2,3,4,5,6,7,8,9,10].map(|x4| [1,2,3,4,5,6,7,8,9,10].map(|x3| [1,2,3,4,5,6,7,8,9,10].map(|x2| [1,2,3,4,5,6,7,8,9,10].map(|x1| 1).len()).len()).len()).len()).len()).len()).len()).len() > 0'",
            criteria,
            "recipient: \"%(msg.owner)s\"",
        ),
    )
    .unwrap();
    std::fs::write(
        rules.path().join("good.yml"),
        rule(
            "Good",
            "  topic: buildsys.build.state.change",
            criteria,
            "recipient: \"%(msg.owner)s\"",
        ),
    )
    .unwrap();
    let (mut awarder, shared) = awarder(rules.path(), history.clone(), tahrir.clone());
    let refuse = |_: &str, _: Value| -> Result<(), String> { Err("the bus is gone".into()) };
    let b = build("ralph", "2026-c1", 1);
    store(&*history, &b);
    let outcome = awarder.handle(
        b["topic"].as_str().unwrap(),
        &b,
        std::time::SystemTime::now(),
        &refuse,
    );
    let errors: Vec<(&str, &str)> = outcome
        .errors
        .iter()
        .map(|(r, e)| (r.as_str(), e.as_str()))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|(r, e)| *r == "Missing Field" && e.contains("msg.submitter.name")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|(r, e)| *r == "Slow Expression" && e.contains("stopped")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|(r, e)| *r == "Good" && e.contains("the bus is gone")),
        "{errors:?}"
    );
    assert_eq!(
        tahrir.assertion_count().unwrap(),
        0,
        "no award without its message"
    );
    let rules_doc = shared.read().unwrap().to_json();
    let missing = rules_doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Missing Field")
        .unwrap();
    assert_eq!(missing["errors_total"], 1);
    assert!(missing["last_error"]
        .as_str()
        .unwrap()
        .contains("msg.submitter.name"));
    // The bus is back: the next build awards, and the message is published.
    let sent = Arc::new(Mutex::new(0));
    let s = sent.clone();
    let publish = move |_: &str, _: Value| -> Result<(), String> {
        *s.lock().unwrap() += 1;
        Ok(())
    };
    let b = build("ralph", "2026-c2", 1);
    store(&*history, &b);
    let outcome = awarder.handle(
        b["topic"].as_str().unwrap(),
        &b,
        std::time::SystemTime::now(),
        &publish,
    );
    assert_eq!(outcome.awards.len(), 1, "{outcome:?}");
    assert_eq!(tahrir.assertion_count().unwrap(), 1);
    assert!(*sent.lock().unwrap() >= 1);
}

/// Two hubs (two pools on one PostgreSQL database) award the same badges to
/// the same people at the same time, each moving the leaderboard in passes of
/// its own meanwhile: each person holds each badge once, exactly one award
/// message goes out per assertion, and the ranks end as a full recount gives.
#[test]
fn two_hubs_on_one_postgres_award_each_badge_once() {
    let cluster = fedhub_testkit::PgCluster::start();
    let database = "badges";
    cluster.create_database(database);
    let hub_a = tahrir(&cluster.url_for(database));
    let hub_b = tahrir(&cluster.socket_url_for(database));
    assert!(!hub_a.database().shares_pool_with(hub_b.database()));
    let issuer_id = hub_a.ensure_issuer(&issuer()).unwrap();
    assert_eq!(hub_b.ensure_issuer(&issuer()).unwrap(), issuer_id);
    let badges = badges(&hub_a, issuer_id, 5);
    for badge in &badges {
        hub_b.ensure_badge(badge, issuer_id).unwrap();
    }
    let published = Arc::new(Mutex::new(0usize));
    // ralph earns two badges, pingou three, kevin four, adamw five.
    let users = ["ralph", "pingou", "kevin", "adamw"];
    let keepers = [&hub_a, &hub_b].map(|hub| fedhub_badges::ranks::RankKeeper::new(hub.clone()));
    std::thread::scope(|scope| {
        for (hub, keeper) in [&hub_a, &hub_b].into_iter().zip(&keepers) {
            for _ in 0..2 {
                let (badges, published) = (&badges, published.clone());
                scope.spawn(move || {
                    for (i, user) in users.iter().enumerate() {
                        for badge in &badges[..i + 2] {
                            let made = hub
                                .award(badge, user, "link", |_| {
                                    *published.lock().unwrap() += 1;
                                    Ok(())
                                })
                                .unwrap();
                            if let Some(award) = made {
                                keeper.note(&award);
                            }
                            keeper.update(&|_, _| Ok(())).unwrap();
                        }
                    }
                });
            }
        }
    });
    let count = hub_a.assertion_count().unwrap();
    assert_eq!(count, 2 + 3 + 4 + 5);
    assert_eq!(
        *published.lock().unwrap() as u64,
        count,
        "one message per award"
    );
    for (i, user) in users.iter().enumerate() {
        let person = hub_b.person_badges(user).unwrap().unwrap();
        assert_eq!(person["count"], i + 2, "{person}");
    }
    // Every award was followed by a pass of its hub: the ranks are settled.
    for keeper in &keepers {
        assert_eq!(keeper.pending(), 0);
    }
    let board = hub_b.leaderboard(10).unwrap();
    let ranks: Vec<(&str, i64)> = board["leaderboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["user"].as_str().unwrap(), r["rank"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ranks,
        vec![("adamw", 1), ("kevin", 2), ("pingou", 3), ("ralph", 4)],
        "{board}"
    );
}

/// Every (nickname, rank) stored, and the ranks a full recount gives
/// (tahrir's: by badge count, ties share a rank, opted-out people unranked).
fn stored_and_recounted(
    tahrir: &fedhub_badges::Tahrir,
) -> (
    std::collections::BTreeMap<String, i64>,
    std::collections::BTreeMap<String, i64>,
) {
    use fedhub_storage::sql::query;
    tahrir
        .database()
        .transaction(|tx| {
            let e = |e| fedhub_storage::StorageError::database(tahrir.database().url(), "read", e);
            let pairs = |rows: Vec<Vec<Value>>| {
                rows.into_iter()
                    .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
                    .collect()
            };
            let stored = query(
                tx,
                "SELECT nickname, rank FROM persons WHERE rank IS NOT NULL AND opt_out = 0",
                &[],
            )
            .map_err(e)?;
            let recounted = query(
                tx,
                "SELECT p.nickname, RANK() OVER (ORDER BY count(a.id) DESC) FROM persons p JOIN assertions a ON a.person_id = p.id WHERE p.opt_out = 0 GROUP BY p.id",
                &[],
            )
            .map_err(e)?;
            Ok((pairs(stored), pairs(recounted)))
        })
        .unwrap()
}

#[test]
fn each_rank_pass_leaves_the_ranks_of_a_full_recount_and_announces_who_advanced() {
    let dir = tempfile::tempdir().unwrap();
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let issuer_id = tahrir.ensure_issuer(&issuer()).unwrap();
    let badges = badges(&tahrir, issuer_id, 12);
    let users: Vec<String> = (0..25).map(|i| format!("user{i}")).collect();
    tahrir.set_opt_out("user0", true).unwrap();
    let keeper = fedhub_badges::ranks::RankKeeper::new(tahrir.clone());
    let mut rng = fedhub_testkit::fuzz::Rng::new(11);
    let mut previous = std::collections::BTreeMap::new();
    let (mut awards, mut advances, mut several) = (0, 0, 0);
    for step in 0..200 {
        // One to four awards per pass (the same person may win twice).
        // Skewed: a few people collect most badges, so ranks tie and split.
        let mut winners = std::collections::BTreeSet::new();
        for _ in 0..=rng.below(4) {
            let user = &users[rng.below(users.len()).min(rng.below(users.len()))];
            let badge = &badges[rng.below(badges.len())];
            let made = tahrir.award(badge, user, "link", |_| Ok(())).unwrap();
            if user == "user0" {
                assert!(made.is_none(), "an opted-out person gets nothing");
            }
            if let Some(award) = made {
                awards += 1;
                keeper.note(&award);
                winners.insert(user.clone());
            }
        }
        several += usize::from(winners.len() > 1);
        let announced: Published = Arc::default();
        let a = announced.clone();
        let publish = move |topic: &str, msg: Value| -> Result<(), String> {
            a.lock().unwrap().push((topic.to_string(), msg));
            Ok(())
        };
        let pass = keeper.update(&publish).unwrap();
        assert_eq!(pass.winners, winners.len(), "step {step}");
        let (stored, recounted) = stored_and_recounted(&tahrir);
        assert_eq!(stored, recounted, "step {step}: {winners:?} won");
        let announced = announced.lock().unwrap();
        let expected: Vec<&String> = winners
            .iter()
            .filter(|user| {
                let old: Option<&i64> = previous.get(*user);
                old.is_none_or(|o| recounted[*user] < *o)
            })
            .collect();
        assert_eq!(
            announced.len(),
            expected.len(),
            "step {step}: {announced:?}"
        );
        let by_user: std::collections::BTreeMap<&str, &(String, Value)> = announced
            .iter()
            .map(|a| (a.1["person"]["nickname"].as_str().unwrap(), a))
            .collect();
        for user in expected {
            advances += 1;
            let (topic, advance) = by_user[user.as_str()];
            assert_eq!(topic, "fedbadges.person.rank.advance");
            assert_eq!(advance["person"]["rank"], recounted[user]);
            assert_eq!(advance["old_rank"], json!(previous.get(user)));
        }
        previous = recounted;
    }
    assert!(
        awards > 100 && advances > 20 && several > 20,
        "{awards} awards, {advances} advances, {several} passes with several winners"
    );
    assert_eq!(keeper.update(&|_, _| Ok(())).unwrap().winners, 0);
}

/// A pass that fails (here: `persons` gone for a moment) keeps its winners,
/// counts the failure and publishes nothing; the next pass settles them, with
/// the ranks they had before their awards.
#[test]
fn a_failed_rank_pass_keeps_its_winners_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let issuer_id = tahrir.ensure_issuer(&issuer()).unwrap();
    let badges = badges(&tahrir, issuer_id, 2);
    let keeper = fedhub_badges::ranks::RankKeeper::new(tahrir.clone());
    for badge in &badges {
        let award = tahrir
            .award(badge, "ralph", "link", |_| Ok(()))
            .unwrap()
            .unwrap();
        keeper.note(&award);
    }
    let rename = |from: &str, to: &str| {
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        tahrir
            .database()
            .transaction(|tx| {
                fedhub_storage::sql::execute(tx, &sql, &[]).map_err(|e| {
                    fedhub_storage::StorageError::database(tahrir.database().url(), "rename", e)
                })
            })
            .unwrap();
    };
    let published: Published = Arc::default();
    let p = published.clone();
    let publish = move |topic: &str, msg: Value| -> Result<(), String> {
        p.lock().unwrap().push((topic.to_string(), msg));
        Ok(())
    };
    rename("persons", "persons_away");
    let error = keeper.update(&publish).unwrap_err();
    assert!(fedhub::error_chain(&error).contains("persons"), "{error}");
    assert_eq!(keeper.pending(), 1, "the winner waits for the next pass");
    assert_eq!(keeper.to_json()["failures_total"], 1);
    assert!(published.lock().unwrap().is_empty());
    rename("persons_away", "persons");
    let pass = keeper.update(&publish).unwrap();
    assert_eq!((pass.winners, pass.advances), (1, 1));
    assert_eq!(keeper.pending(), 0);
    let published = published.lock().unwrap();
    assert_eq!(published[0].1["person"]["nickname"], "ralph");
    assert_eq!(published[0].1["person"]["rank"], 1);
    assert_eq!(published[0].1["old_rank"], Value::Null);
}
