//! datagrepper's HTTP API, mounted by the consumer on the hub's HTTP server:
//!
//! - `GET /datagrepper/raw` (and `/raw/`): datagrepper's arguments and response
//!   (`raw_messages, count, pages, total, arguments`);
//! - `GET /datagrepper/id?id=<msg_id>`: one message;
//! - `GET /datagrepper/messagecount`: `{"messagecount": N}` (exact);
//! - `GET /datagrepper/widget.js`: the embeddable activity widget ([`WIDGET_JS`]);
//! - `GET /datagrepper/health`: the writer's [`Health`](crate::writer::Health),
//!   503 while commits fail.
//!
//! Input is checked strictly: an unknown parameter, a repeated single-valued
//! one, a bad number or date, `rows_per_page` over 100, a page below 1, a name
//! with characters no user, package, category or topic has (quotes, spaces,
//! semicolons…) all get a 400 whose JSON names the parameter. Values only ever
//! reach SQL as bound parameters. `contains` keeps datagrepper's 2017 guard
//! against slow scans: it needs a `topic` or `category` and a window starting at
//! most 32 weeks ago. Queries run on actix's blocking pool, so a slow query
//! never holds up the hub's health probes.

use std::sync::Arc;

use fedhub::actix_web::{web, HttpRequest, HttpResponse};
use fedhub::HttpRoutes;
use serde_json::{json, Map, Value};

use crate::filter::{now_secs, Filter, FilterError, Order, Page, StoredMessage, MAX_ROWS_PER_PAGE};
use crate::meta;
use crate::store::{Store, StoreError};
use crate::writer::WriterState;

/// A `/raw` response at least this large returns the memory its building
/// took to the system once it is encoded.
const RELEASE_MEMORY_AFTER_BYTES: usize = 8 << 20;

/// Longest accepted parameter value, in characters.
pub const MAX_VALUE_CHARS: usize = 255;

/// Most values accepted for one repeatable parameter.
pub const MAX_VALUES: usize = 50;

/// How far back a `contains` query may start (datagrepper: 32 weeks).
pub const CONTAINS_MAX_AGE_SECS: f64 = 32.0 * 7.0 * 86_400.0;

/// The datagrepper widget served at `/datagrepper/widget.js`: a user's, a
/// package's or a topic's latest activity on any page, configured by the
/// `data-` attributes of its `<script>` tag (JSON-P on `/raw`, so it works
/// from pages of other origins).
pub const WIDGET_JS: &str = include_str!("widget.js");

/// Options of the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// Window applied to `/raw` queries that give no start, end or delta.
    pub default_query_delta_secs: Option<f64>,
    /// The most bytes of stored messages one `/raw` page may hold (`None`: no limit).
    pub max_response_bytes: Option<u64>,
}

/// `meta` fields this server can add to messages.
pub const META_FIELDS: [&str; 5] = ["title", "subtitle", "link", "usernames", "packages"];

/// A parsed `/raw` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRequest {
    /// The query.
    pub filter: Filter,
    /// `meta` fields to add to each message.
    pub meta: Vec<String>,
    /// JSON-P callback.
    pub callback: Option<String>,
}

fn bad(parameter: &str, problem: impl Into<String>) -> FilterError {
    FilterError::new(parameter, problem)
}

/// Decoded `key=value` pairs of a query string.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A single-valued parameter, rejecting repeats.
fn single<'a>(pairs: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, FilterError> {
    let mut found = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(bad(key, "given more than once; expected a single value"));
    }
    Ok(first)
}

fn show(value: &str) -> String {
    let cut: String = value.chars().take(60).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn check_length(key: &str, value: &str) -> Result<(), FilterError> {
    if value.is_empty() {
        return Err(bad(key, "is empty; expected a value"));
    }
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(bad(
            key,
            format!("is longer than {MAX_VALUE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Characters found in users, packages, categories and topics (FAS names, IRC
/// nicks, RPM names, dotted topics, STOMP `/topic/…`).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-+@|[]{}^~/".contains(c)
}

fn names(pairs: &[(String, String)], key: &str) -> Result<Vec<String>, FilterError> {
    let values: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect();
    if values.len() > MAX_VALUES {
        return Err(bad(
            key,
            format!("given {} times; at most {MAX_VALUES} values", values.len()),
        ));
    }
    for v in &values {
        check_length(key, v)?;
        if key != "contains" {
            if let Some(c) = v.chars().find(|c| !name_char(*c)) {
                return Err(bad(
                    key,
                    format!(
                        "{} contains {c:?}; expected a name made of letters, digits and . _ - + @ | [ ] {{ }} ^ ~ /",
                        show(v)
                    ),
                ));
            }
        }
    }
    Ok(values)
}

/// Unix seconds, or an ISO 8601 / RFC 3339 time (UTC when no offset is given).
pub fn parse_time(key: &str, value: &str) -> Result<f64, FilterError> {
    let expected = "expected unix seconds (like 1700000000 or 1700000000.5) or an ISO 8601 time (like 2026-11-23T06:00:00Z)";
    check_length(key, value)?;
    if let Ok(v) = value.parse::<f64>() {
        if v.is_finite() && v.abs() < 1e11 {
            return Ok(v);
        }
        return Err(bad(
            key,
            format!("{} is out of range; {expected}", show(value)),
        ));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_micros() as f64 / 1e6);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, format) {
            return Ok(t.and_utc().timestamp_micros() as f64 / 1e6);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp() as f64);
        }
    }
    Err(bad(
        key,
        format!("{} is not a time; {expected}", show(value)),
    ))
}

fn whole(key: &str, value: &str, min: u32, max: u32) -> Result<u32, FilterError> {
    let range = if max == u32::MAX {
        format!("a whole number of {min} or more")
    } else {
        format!("a whole number from {min} to {max}")
    };
    match value.trim().parse::<i64>() {
        Ok(n) if n >= i64::from(min) && n <= i64::from(max) => Ok(n as u32),
        Ok(n) => Err(bad(key, format!("{n} is out of range; expected {range}"))),
        Err(_) => Err(bad(
            key,
            format!("{} is not a number; expected {range}", show(value)),
        )),
    }
}

fn check_known(pairs: &[(String, String)], known: &[&str]) -> Result<(), FilterError> {
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        let mut list = known.to_vec();
        list.sort_unstable();
        return Err(bad(
            k,
            format!("unknown parameter; expected one of {}", list.join(", ")),
        ));
    }
    Ok(())
}

fn parse_meta(pairs: &[(String, String)]) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "meta") {
        if !META_FIELDS.contains(&v.as_str()) {
            return Err(bad(
                "meta",
                format!(
                    "{} is not supported; expected one of {}",
                    show(v),
                    META_FIELDS.join(", ")
                ),
            ));
        }
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(out)
}

fn parse_callback(pairs: &[(String, String)]) -> Result<Option<String>, FilterError> {
    let Some(cb) = single(pairs, "callback")? else {
        return Ok(None);
    };
    let mut chars = cb.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
    let rest_ok = cb
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c));
    if !first_ok || !rest_ok || cb.len() > 64 {
        return Err(bad(
            "callback",
            format!(
                "{} is not valid; expected a JavaScript function name (letters, digits, _ $ .)",
                show(cb)
            ),
        ));
    }
    Ok(Some(cb.to_string()))
}

/// Checks the HTML-only parameters datagrepper accepts (`size`, `chrome`) and the
/// unsupported `grouped=true`.
fn check_presentation(pairs: &[(String, String)]) -> Result<(), FilterError> {
    if let Some(size) = single(pairs, "size")? {
        if !["small", "medium", "large", "extra-large"].contains(&size) {
            return Err(bad(
                "size",
                format!(
                    "{}; expected small, medium, large or extra-large",
                    show(size)
                ),
            ));
        }
    }
    for key in ["chrome", "is_raw"] {
        if let Some(v) = single(pairs, key)? {
            if v != "true" && v != "false" {
                return Err(bad(key, format!("{}; expected true or false", show(v))));
            }
        }
    }
    if let Some(g) = single(pairs, "grouped")? {
        match g {
            "false" => {}
            "true" => return Err(bad("grouped", "grouping (conglomerate) is not supported")),
            other => return Err(bad("grouped", format!("{}; expected false", show(other)))),
        }
    }
    Ok(())
}

const RAW_PARAMS: [&str; 20] = [
    "start",
    "end",
    "delta",
    "user",
    "package",
    "category",
    "topic",
    "contains",
    "not_user",
    "not_package",
    "not_category",
    "not_topic",
    "page",
    "rows_per_page",
    "order",
    "meta",
    "callback",
    "grouped",
    "size",
    "chrome",
];

/// Parses and checks a `/raw` query string.
pub fn parse_raw(query: &str, options: &ApiOptions, now: f64) -> Result<RawRequest, FilterError> {
    let pairs = query_pairs(query);
    check_known(&pairs, &RAW_PARAMS)?;
    check_presentation(&pairs)?;
    let mut filter = Filter {
        now: Some(now),
        ..Filter::default()
    };
    if let Some(v) = single(&pairs, "start")? {
        filter.start = Some(parse_time("start", v)?);
    }
    if let Some(v) = single(&pairs, "end")? {
        filter.end = Some(parse_time("end", v)?);
    }
    if let Some(v) = single(&pairs, "delta")? {
        check_length("delta", v)?;
        match v.parse::<f64>() {
            Ok(d) if d.is_finite() && d > 0.0 => filter.delta = Some(d),
            _ => {
                return Err(bad(
                    "delta",
                    format!(
                        "{} is not valid; expected a positive number of seconds",
                        show(v)
                    ),
                ))
            }
        }
    }
    if filter.start.is_none() && filter.end.is_none() && filter.delta.is_none() {
        filter.delta = options.default_query_delta_secs;
    }
    filter.users = names(&pairs, "user")?;
    filter.packages = names(&pairs, "package")?;
    filter.categories = names(&pairs, "category")?;
    filter.topics = names(&pairs, "topic")?;
    filter.contains = names(&pairs, "contains")?;
    filter.not_users = names(&pairs, "not_user")?;
    filter.not_packages = names(&pairs, "not_package")?;
    filter.not_categories = names(&pairs, "not_category")?;
    filter.not_topics = names(&pairs, "not_topic")?;
    if let Some(v) = single(&pairs, "page")? {
        filter.page = whole("page", v, 1, u32::MAX)?;
    }
    if let Some(v) = single(&pairs, "rows_per_page")? {
        filter.rows_per_page = whole("rows_per_page", v, 1, MAX_ROWS_PER_PAGE)?;
    }
    if let Some(v) = single(&pairs, "order")? {
        filter.order = match v {
            "asc" => Order::Asc,
            "desc" => Order::Desc,
            other => {
                return Err(bad(
                    "order",
                    format!("{}; expected asc or desc", show(other)),
                ))
            }
        };
    }
    let window = filter.window()?;
    if !filter.contains.is_empty() {
        if filter.topics.is_empty() && filter.categories.is_empty() {
            return Err(bad(
                "contains",
                "needs a topic or category as well: expected topic= or category= beside it \
                 (full-text search over every message is too slow)",
            ));
        }
        match window {
            Some((s, _)) if s >= now - CONTAINS_MAX_AGE_SECS => {}
            _ => {
                return Err(bad(
                    "contains",
                    "needs a window: expected start or delta, starting at most 32 weeks ago",
                ))
            }
        }
    }
    Ok(RawRequest {
        meta: parse_meta(&pairs)?,
        callback: parse_callback(&pairs)?,
        filter,
    })
}

fn error_body(e: &FilterError) -> Value {
    json!({"error": e.to_string(), "parameter": e.parameter})
}

fn respond(
    status: fedhub::actix_web::http::StatusCode,
    body: Value,
    callback: Option<&str>,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    // Pages of any origin may read the API (the widget, dashboards).
    builder.insert_header(("Access-Control-Allow-Origin", "*"));
    match callback {
        Some(cb) => builder
            .content_type("application/javascript")
            .body(format!("{cb}({body});")),
        None => builder
            .content_type("application/json")
            .body(body.to_string()),
    }
}

fn bad_request(state: &WriterState, endpoint: &str, e: &FilterError) -> HttpResponse {
    state.bad_request(endpoint, e);
    respond(
        fedhub::actix_web::http::StatusCode::BAD_REQUEST,
        error_body(e),
        None,
    )
}

fn server_error(error: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %error, "history query failed");
    respond(
        fedhub::actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": error.to_string()}),
        None,
    )
}

/// A message's JSON with the requested `meta` fields.
pub fn message_json(message: &StoredMessage, meta_fields: &[String]) -> Value {
    let mut out = message.to_json();
    if !meta_fields.is_empty() {
        let mut m = Map::new();
        for field in meta_fields {
            let value = match field.as_str() {
                "title" => json!(meta::title(&message.topic)),
                "subtitle" => json!(meta::subtitle_of(&message.topic, &message.msg)),
                "link" => json!(meta::link_of(&message.topic, &message.msg)),
                "usernames" => json!(meta::usernames_of(&message.topic, &message.msg)),
                "packages" => json!(meta::packages_of(&message.topic, &message.msg)),
                _ => continue,
            };
            m.insert(field.clone(), value);
        }
        if let Value::Object(o) = &mut out {
            o.insert("meta".into(), Value::Object(m));
        }
    }
    out
}

/// datagrepper's `/raw` response for one page: `arguments`, `count`, `pages`,
/// `total` and `raw_messages` (with the requested `meta`).
pub fn raw_body(request: &RawRequest, page: &Page, window: Option<(f64, f64)>) -> Value {
    let mut arguments = request.filter.arguments(window);
    if let Value::Object(a) = &mut arguments {
        a.insert("meta".into(), json!(request.meta));
        a.insert("grouped".into(), json!(false));
    }
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|m| message_json(m, &request.meta))
        .collect();
    json!({
        "arguments": arguments,
        "count": messages.len(),
        "pages": page.pages,
        "total": page.total,
        "raw_messages": messages,
    })
}

async fn raw(
    req: HttpRequest,
    store: Arc<dyn Store>,
    state: Arc<WriterState>,
    options: ApiOptions,
) -> HttpResponse {
    let request = match parse_raw(req.query_string(), &options, now_secs()) {
        Ok(r) => r,
        Err(e) => return bad_request(&state, "raw", &e),
    };
    let mut filter = request.filter.clone();
    filter.max_page_bytes = options.max_response_bytes;
    // The query, the document and its text are all built on a blocking
    // thread: the server's thread (which also answers /health and /metrics)
    // only sends the bytes.
    let result = web::block(move || {
        let window = filter.window();
        store.grep(&filter).map(|page| {
            let body = raw_body(&request, &page, window.ok().flatten());
            drop(page);
            let text = match request.callback.as_deref() {
                Some(cb) => format!("{cb}({body});"),
                None => body.to_string(),
            };
            drop(body);
            if text.len() >= RELEASE_MEMORY_AFTER_BYTES {
                // The page's trees are freed: give their memory back now,
                // rather than keep the peak of a large query for good.
                fedhub::release_free_memory();
            }
            (text, request.callback.is_some())
        })
    })
    .await;
    match result {
        Ok(Ok((text, jsonp))) => HttpResponse::Ok()
            .insert_header(("Access-Control-Allow-Origin", "*"))
            .content_type(if jsonp {
                "application/javascript"
            } else {
                "application/json"
            })
            .body(text),
        Ok(Err(StoreError::PageTooLarge { limit })) => {
            let error = FilterError::new(
                "rows_per_page",
                format!(
                    "the page would hold more than max_response_bytes = {limit} bytes of messages; ask for fewer rows_per_page"
                ),
            );
            state.bad_request("raw", &error);
            respond(
                fedhub::actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                error_body(&error),
                None,
            )
        }
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

const ID_PARAMS: [&str; 6] = ["id", "meta", "callback", "is_raw", "size", "chrome"];

async fn by_id(req: HttpRequest, store: Arc<dyn Store>, state: Arc<WriterState>) -> HttpResponse {
    let pairs = query_pairs(req.query_string());
    let parsed = (|| {
        check_known(&pairs, &ID_PARAMS)?;
        check_presentation(&pairs)?;
        let id = single(&pairs, "id")?
            .ok_or_else(|| bad("id", "missing; expected ?id=<msg_id>"))?
            .to_string();
        check_length("id", &id)?;
        Ok::<_, FilterError>((id, parse_meta(&pairs)?, parse_callback(&pairs)?))
    })();
    let (id, meta_fields, callback) = match parsed {
        Ok(p) => p,
        Err(e) => return bad_request(&state, "id", &e),
    };
    let lookup = id.clone();
    match web::block(move || store.get(&lookup)).await {
        Ok(Ok(Some(message))) => respond(
            fedhub::actix_web::http::StatusCode::OK,
            message_json(&message, &meta_fields),
            callback.as_deref(),
        ),
        Ok(Ok(None)) => respond(
            fedhub::actix_web::http::StatusCode::NOT_FOUND,
            json!({"error": format!("no message with id {}", show(&id)), "parameter": "id"}),
            callback.as_deref(),
        ),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

async fn message_count(
    req: HttpRequest,
    store: Arc<dyn Store>,
    state: Arc<WriterState>,
) -> HttpResponse {
    let pairs = query_pairs(req.query_string());
    let callback = match check_known(&pairs, &["callback"]).and_then(|_| parse_callback(&pairs)) {
        Ok(cb) => cb,
        Err(e) => return bad_request(&state, "messagecount", &e),
    };
    match web::block(move || store.message_count()).await {
        Ok(Ok(n)) => respond(
            fedhub::actix_web::http::StatusCode::OK,
            json!({"messagecount": n}),
            callback.as_deref(),
        ),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

fn health(state: &WriterState) -> HttpResponse {
    let h = state.health();
    let status = if h.healthy {
        fedhub::actix_web::http::StatusCode::OK
    } else {
        fedhub::actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, json!(h), None)
}

/// The routes, relative to the consumer's prefix (`/datagrepper`):
/// `/raw`, `/raw/`, `/id`, `/messagecount`, `/health`.
pub fn routes(store: Arc<dyn Store>, state: Arc<WriterState>, options: ApiOptions) -> HttpRoutes {
    Arc::new(move |cfg: &mut web::ServiceConfig| {
        for path in ["/raw", "/raw/"] {
            let (store, state, options) = (store.clone(), state.clone(), options.clone());
            cfg.service(
                web::resource(path).route(web::get().to(move |req: HttpRequest| {
                    raw(req, store.clone(), state.clone(), options.clone())
                })),
            );
        }
        let (id_store, id_state) = (store.clone(), state.clone());
        cfg.service(web::resource("/id").route(
            web::get().to(move |req: HttpRequest| by_id(req, id_store.clone(), id_state.clone())),
        ));
        let (count_store, count_state) = (store.clone(), state.clone());
        cfg.service(web::resource("/messagecount").route(web::get().to(
            move |req: HttpRequest| message_count(req, count_store.clone(), count_state.clone()),
        )));
        cfg.service(web::resource("/widget.js").route(web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header(("Access-Control-Allow-Origin", "*"))
                .insert_header(("Cache-Control", "public, max-age=300"))
                .content_type("application/javascript; charset=utf-8")
                .body(WIDGET_JS)
        })));
        let state = state.clone();
        cfg.service(web::resource("/health").route(web::get().to(move || {
            let response = health(&state);
            async move { response }
        })));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn parse(q: &str) -> Result<RawRequest, FilterError> {
        parse_raw(q, &ApiOptions::default(), NOW)
    }

    #[test]
    fn datagrepper_arguments_parse() {
        let r = parse(
            "user=ralph&user=pingou&package=kernel&category=buildsys&topic=org.fedoraproject.prod.git.receive\
             &not_user=bot&not_package=x&not_category=fas&not_topic=t.a&delta=3600&page=2&rows_per_page=100\
             &order=asc&meta=subtitle&meta=usernames&callback=cb&size=small&chrome=false&grouped=false",
        )
        .unwrap();
        let f = &r.filter;
        assert_eq!(f.users, vec!["ralph", "pingou"]);
        assert_eq!(f.packages, vec!["kernel"]);
        assert_eq!(f.not_topics, vec!["t.a"]);
        assert_eq!(f.window().unwrap(), Some((NOW - 3600.0, NOW)));
        assert_eq!((f.page, f.rows_per_page, f.order), (2, 100, Order::Asc));
        assert_eq!(r.meta, vec!["subtitle", "usernames"]);
        assert_eq!(r.callback.as_deref(), Some("cb"));
    }

    #[test]
    fn times_accept_seconds_and_iso_dates() {
        assert_eq!(
            parse_time("start", "1700000000.5").unwrap(),
            1_700_000_000.5
        );
        assert_eq!(
            parse_time("start", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000.0
        );
        assert_eq!(
            parse_time("start", "2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000.0
        );
        assert_eq!(
            parse_time("start", "2023-11-14T22:13:20").unwrap(),
            1_700_000_000.0
        );
        assert_eq!(parse_time("start", "2023-11-14").unwrap(), 1_699_920_000.0);
    }

    #[test]
    fn bad_input_names_the_parameter() {
        let cases = [
            ("start=yesterday", "start"),
            ("end=2023-13-45", "end"),
            ("start=1e300", "start"),
            ("start=NaN", "start"),
            ("delta=-5", "delta"),
            ("delta=0", "delta"),
            ("rows_per_page=10000", "rows_per_page"),
            ("rows_per_page=0", "rows_per_page"),
            ("page=-1", "page"),
            ("page=0", "page"),
            ("page=1.5", "page"),
            ("order=random", "order"),
            ("bogus=1", "bogus"),
            ("users=ralph", "users"),
            ("page=1&page=2", "page"),
            ("user=", "user"),
            ("user=ralph'%20OR%20'1'='1", "user"),
            ("package=x;DROP%20TABLE%20messages", "package"),
            ("topic=a%22b", "topic"),
            ("category=(select%201)", "category"),
            ("not_user=a%20b", "not_user"),
            ("meta=icon", "meta"),
            ("callback=alert(1)", "callback"),
            ("grouped=true", "grouped"),
            ("size=huge", "size"),
            ("start=10&end=5", "end"),
            ("contains=foo", "contains"),
            ("contains=foo&topic=a.b", "contains"),
            ("contains=foo&topic=a.b&start=1", "contains"),
        ];
        for (q, parameter) in cases {
            let err = parse(q).expect_err(q);
            assert_eq!(err.parameter, parameter, "{q}: {err}");
            assert!(err.to_string().starts_with(parameter), "{err}");
        }
        let long = format!("user={}", "a".repeat(300));
        assert_eq!(parse(&long).unwrap_err().parameter, "user");
        let many = vec!["user=a"; 51].join("&");
        assert_eq!(parse(&many).unwrap_err().parameter, "user");
    }

    #[test]
    fn contains_is_free_text_within_its_guard() {
        let r =
            parse("contains=%27;%20DROP%20TABLE%20messages;--&category=git&delta=86400").unwrap();
        assert_eq!(r.filter.contains, vec!["'; DROP TABLE messages;--"]);
    }

    #[test]
    fn default_delta_applies_only_without_times() {
        let options = ApiOptions {
            default_query_delta_secs: Some(600.0),
            max_response_bytes: None,
        };
        let r = parse_raw("", &options, NOW).unwrap();
        assert_eq!(r.filter.window().unwrap(), Some((NOW - 600.0, NOW)));
        let r = parse_raw("start=5&end=10", &options, NOW).unwrap();
        assert_eq!(r.filter.window().unwrap(), Some((5.0, 10.0)));
        assert_eq!(parse("").unwrap().filter.window().unwrap(), None);
    }
}
