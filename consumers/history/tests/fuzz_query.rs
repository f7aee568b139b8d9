//! Bounded fuzzing of the datagrepper `/raw` query parser and its time parser
//! (`fedhub_testkit::fuzz`: `FEDHUB_FUZZ_SECS` per target, failing inputs kept
//! in `fuzz/regressions/<target>/`): any query string is either a request or
//! an error that names what was wrong, never a panic.

use fedhub_history::http::{parse_raw, parse_time, ApiOptions};
use fedhub_testkit::fuzz::fuzz;

#[test]
fn fuzz_the_datagrepper_raw_query_parser() {
    let seeds: Vec<Vec<u8>> = [
        "",
        "topic=org.fedoraproject.prod.bodhi.update.request&rows_per_page=20&page=2",
        "start=1700000000&end=2026-11-23T06:00:00Z&order=asc",
        "delta=3600&user=alice&user=bob&package=kernel&category=bodhi&not_category=git",
        "contains=h%C3%A9llo&meta=title&meta=link&callback=cb&grouped=true",
        "msg_id=2026-00000000-0000-4000-8000-000000000001&size=small&chrome=false",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let options = ApiOptions {
        default_query_delta_secs: Some(600.0),
        max_response_bytes: Some(1 << 20),
    };
    fuzz("datagrepper-query", &seeds, |input| {
        let query = String::from_utf8_lossy(input);
        if let Err(error) = parse_raw(&query, &options, 1_795_392_000.0) {
            assert!(!error.to_string().trim().is_empty(), "{query:?}");
        }
    });
}

#[test]
fn fuzz_the_datagrepper_time_parser() {
    let seeds: Vec<Vec<u8>> = [
        "1700000000",
        "1700000000.5",
        "2026-11-23T06:00:00Z",
        "2026-11-23T06:00:00+02:00",
        "2026-11-23",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("datagrepper-time", &seeds, |input| {
        let text = String::from_utf8_lossy(input);
        match parse_time("start", &text) {
            Ok(seconds) => assert!(seconds.is_finite(), "{text:?} gave {seconds}"),
            Err(error) => assert!(error.to_string().contains("start"), "{text:?}: {error}"),
        }
    });
}
