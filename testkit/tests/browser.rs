//! The headless Chromium helper runs a page's scripts, timers included, and
//! renders a screenshot.

use std::time::Duration;

use fedhub_testkit::{artifact_path, Chromium};

#[test]
fn dump_dom_runs_scripts_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        r#"<!doctype html><p id="out">waiting</p>
<script>setTimeout(() => { document.getElementById('out').textContent = 'ran ' + (6 * 7); }, 500);</script>"#,
    )
    .unwrap();
    let url = format!("file://{}", page.display());
    let chromium = Chromium::new();
    let dom = chromium.dump_dom(&url, Duration::from_secs(2));
    assert!(dom.contains(r#"<p id="out">ran 42</p>"#), "{dom}");

    let shot = artifact_path("testkit/browser.png");
    let bytes = chromium.screenshot(&url, Duration::from_secs(1), &shot, 320, 200);
    let png = std::fs::read(&shot).unwrap();
    assert!(bytes > 100 && png.starts_with(b"\x89PNG"), "{bytes} bytes");
}
