//! Package ownership from HTTP services shaped like dist-git's Pagure API and
//! FASJSON, served by a real HTTP server on 127.0.0.1: lookups are cached,
//! and invalidation drops exactly what a bus message concerns.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedhub_notifications::ownership::{AclScope, HttpSource, Ownership};
use serde_json::json;

/// A server answering GET paths from `routes` (404 otherwise), counting requests.
fn serve(routes: HashMap<String, String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push(path.clone());
            let (status, body) = match routes.get(&path) {
                Some(b) => ("200 OK", b.clone()),
                None => ("404 Not Found", "{}".to_string()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn pagure_and_fasjson_answers_are_cached_and_invalidated() {
    let mut routes = HashMap::new();
    routes.insert(
        "/api/0/projects?username=ralph&namespace=rpms&short=1&fork=0".to_string(),
        json!({"projects": [{"name": "kernel", "namespace": "rpms"}, {"name": "site", "namespace": "websites"}], "pagination": {"next": null}}).to_string(),
    );
    routes.insert(
        "/api/0/group/python-sig?projects=1&acl=commit".to_string(),
        json!({"projects": [{"name": "python-requests", "namespace": "rpms"}]}).to_string(),
    );
    routes.insert(
        "/v1/users/ralph/groups/".to_string(),
        json!({"result": [{"groupname": "python-sig"}]}).to_string(),
    );
    routes.insert(
        "/v1/groups/python-sig/members/".to_string(),
        json!({"result": [{"username": "ralph"}, {"username": "bob"}]}).to_string(),
    );
    routes.insert(
        "/api/0/rpms/python-requests".to_string(),
        json!({"access_users": {"owner": ["alice"], "ticket": ["carol"]}, "access_groups": {"commit": ["python-sig"]}}).to_string(),
    );
    let (base, seen) = serve(routes);
    let source = HttpSource::new(&base, &base, Duration::from_secs(5));
    let ownership = Ownership::new(Arc::new(source));

    let owned = ownership.user_packages("ralph").unwrap();
    assert!(owned
        .get("kernel")
        .is_some_and(|a| AclScope::Commit.admits(*a)));
    assert!(
        owned.contains_key("python-requests"),
        "through the group: {owned:?}"
    );
    assert!(!owned.contains_key("site"), "another namespace: {owned:?}");
    let users = ownership.package_users("python-requests").unwrap();
    assert_eq!(users.as_slice(), ["alice", "bob", "carol", "ralph"]);
    let asked = seen.lock().unwrap().len();
    // Answered from memory now.
    ownership.user_packages("ralph").unwrap();
    ownership.package_users("python-requests").unwrap();
    assert_eq!(seen.lock().unwrap().len(), asked);
    // A pkgdb/pagure message about ralph and python-requests drops those two.
    ownership.invalidate_packages(&["ralph".to_string()], &["python-requests".to_string()]);
    ownership.user_packages("ralph").unwrap();
    ownership.package_users("python-requests").unwrap();
    assert!(seen.lock().unwrap().len() > asked);
    // An unknown package is nobody's; a dead service is an error naming the URL.
    assert!(ownership
        .package_users("no-such-package")
        .unwrap()
        .is_empty());
    let dead = Ownership::new(Arc::new(HttpSource::new(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        Duration::from_millis(500),
    )));
    let error = dead.user_packages("ralph").unwrap_err();
    assert!(error.contains("127.0.0.1:9"), "{error}");
    assert_eq!(
        dead.counters()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
