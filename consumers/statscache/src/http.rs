//! statscache's REST API under `/statscache`:
//!
//! - `GET /statscache/`: an HTML page introducing the API, with live examples;
//! - `GET /statscache/api/`: plugin discovery (ident, name, summary,
//!   description, window);
//! - `GET /statscache/api/<ident>`: the plugin's rows, with `start`, `stop`
//!   (Unix seconds), `order` (`asc`|`desc`), `limit`, `page`,
//!   `rows_per_page`, and the key column (`category`, `topic`, `user`,
//!   `package`) to keep one key's rows; paging metadata in `Link` (the query
//!   kept), `X-Link-Count` and `X-Link-Number` headers;
//! - `GET /statscache/api/<ident>/latest`: the newest bucket's rows, or every
//!   key's latest value;
//! - `GET /statscache/api/<ident>/layout`: the plugin's layout;
//! - `GET /statscache/api/_backfill`: the backfill's progress.
//!
//! JSON, JSON-P (`callback`) or CSV, chosen by `format=` or the `Accept`
//! header (statscache's list; 406 when nothing fits). CORS headers on every
//! answer. Bad input is a 400 whose JSON names the parameter and what was
//! expected (an unknown ident is a 404 listing the valid ones), counted in
//! `fedhub_statscache_http_bad_requests_total{reason}`. Too large a `limit`
//! or `rows_per_page` is capped to the configured maximum, and the
//! `X-Capped` header says so. `Server-Timing` gives the time spent serving.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use fedhub::actix_web::http::StatusCode;
use fedhub::actix_web::{web, HttpRequest, HttpResponse};
use fedhub::HttpRoutes;
use serde_json::{json, Value};

use crate::backfill::BackfillProgress;
use crate::engine::{Metrics, PluginInfo};
use crate::plugin::Shape;
use crate::store::{Order, Reader, Row, RowsQuery};

/// Paging limits of the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Rows per page when not asked.
    pub default_rows_per_page: u64,
    /// The most rows per page.
    pub max_rows_per_page: u64,
    /// The largest `limit`.
    pub max_limit: u64,
}

/// A response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/javascript` (JSON-P).
    Javascript,
    /// `text/csv`.
    Csv,
}

/// A refused request: status, the parameter at fault, the message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// 400, 404 or 406.
    pub status: u16,
    /// The parameter at fault, if one is.
    pub parameter: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
    /// Extra JSON fields (the valid idents of a 404).
    pub extra: Option<(String, Value)>,
}

impl ApiError {
    fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            parameter: Some(parameter.into()),
            message: format!("{parameter}: {}", message.into()),
            extra: None,
        }
    }

    fn reason(&self) -> String {
        match (self.status, &self.parameter) {
            (400, Some(p)) => p.clone(),
            (404, _) => "unknown_ident".into(),
            (406, _) => "not_acceptable".into(),
            (s, _) => s.to_string(),
        }
    }
}

/// Supported media types, in statscache's order of preference.
const TYPES: [(&str, Format); 6] = [
    ("application/json", Format::Json),
    ("text/json", Format::Json),
    ("application/javascript", Format::Javascript),
    ("text/javascript", Format::Javascript),
    ("application/csv", Format::Csv),
    ("text/csv", Format::Csv),
];

/// Picks the format: `format=` first, then the `Accept` header (quality
/// values honoured, ties in statscache's order), JSON when absent or `*/*`.
pub fn negotiate(format: Option<&str>, accept: Option<&str>) -> Result<Format, ApiError> {
    if let Some(f) = format {
        return match f {
            "json" => Ok(Format::Json),
            "jsonp" | "js" | "javascript" => Ok(Format::Javascript),
            "csv" => Ok(Format::Csv),
            other => Err(ApiError::bad(
                "format",
                format!("{other:?} is not a format; expected json, jsonp or csv"),
            )),
        };
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Json);
    };
    let mut best: Option<(f32, usize, Format)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let candidates: Vec<(usize, Format)> = match media.as_str() {
            "*/*" | "application/*" => vec![(0, Format::Json)],
            "text/*" => vec![(1, Format::Json)],
            m => TYPES
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| *t == m)
                .map(|(i, (_, f))| (i, *f))
                .collect(),
        };
        for (rank, f) in candidates {
            if best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank < br)) {
                best = Some((q, rank, f));
            }
        }
    }
    best.map(|(_, _, f)| f).ok_or(ApiError {
        status: 406,
        parameter: None,
        message: format!("Content-type(s) not available: {accept} (this API serves application/json, application/javascript and text/csv)"),
        extra: None,
    })
}

/// A parsed rows request.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsRequest {
    /// The query for the store (offset and length filled in later).
    pub query: RowsQuery,
    /// `limit`, capped.
    pub limit: Option<u64>,
    /// `page`, from 1.
    pub page: u64,
    /// `rows_per_page`, capped.
    pub rows_per_page: u64,
    /// What was capped, said in `X-Capped`.
    pub capped: Vec<String>,
}

fn number(key: &str, value: &str) -> Result<f64, ApiError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            ApiError::bad(
                key,
                format!("{value:?} is not a number; expected Unix seconds such as 1700000000.5"),
            )
        })
}

fn positive(key: &str, value: &str) -> Result<u64, ApiError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::bad(
                key,
                format!("{value:?} is not a number of rows; expected a whole number of at least 1"),
            )
        })
}

/// Parses the query of `/api/<ident>`; `key_column` is the plugin's key
/// column, accepted as a filter. `now` is the default `stop` (the end of
/// the open window, for a windowed plugin).
pub fn parse_rows(
    pairs: &[(String, String)],
    key_column: Option<&str>,
    options: &ApiOptions,
    now: f64,
) -> Result<RowsRequest, ApiError> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in pairs {
        let known = matches!(
            k.as_str(),
            "start"
                | "stop"
                | "order"
                | "limit"
                | "page"
                | "rows_per_page"
                | "callback"
                | "format"
                | "_"
        ) || Some(k.as_str()) == key_column;
        if !known {
            let mut expected =
                "start, stop, order, limit, page, rows_per_page, callback, format".to_string();
            if let Some(c) = key_column {
                expected.push_str(", ");
                expected.push_str(c);
            }
            return Err(ApiError::bad(
                k,
                format!("unknown parameter; expected one of {expected}"),
            ));
        }
        if !seen.insert(k.as_str()) {
            return Err(ApiError::bad(
                k,
                "given more than once; expected a single value",
            ));
        }
    }
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let start = get("start").map(|v| number("start", v)).transpose()?;
    let stop = get("stop")
        .map(|v| number("stop", v))
        .transpose()?
        .unwrap_or(now);
    if let Some(start) = start {
        if start > stop {
            return Err(ApiError::bad(
                "start",
                format!("{start} is after stop ({stop}); expected start <= stop"),
            ));
        }
    }
    let order = match get("order") {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(other) => {
            return Err(ApiError::bad(
                "order",
                format!("{other:?}; expected asc or desc"),
            ))
        }
    };
    let mut capped = Vec::new();
    let limit = match get("limit") {
        None => None,
        Some(v) => {
            let asked = positive("limit", v)?;
            if asked > options.max_limit {
                capped.push(format!("limit={} (asked {asked})", options.max_limit));
            }
            Some(asked.min(options.max_limit))
        }
    };
    let page = get("page")
        .map(|v| positive("page", v))
        .transpose()?
        .unwrap_or(1);
    let rows_per_page = match get("rows_per_page") {
        None => options.default_rows_per_page,
        Some(v) => {
            let asked = positive("rows_per_page", v)?;
            if asked > options.max_rows_per_page {
                capped.push(format!(
                    "rows_per_page={} (asked {asked})",
                    options.max_rows_per_page
                ));
            }
            asked.min(options.max_rows_per_page)
        }
    };
    let key = key_column.and_then(get).map(str::to_string);
    if let (Some(k), Some(c)) = (&key, key_column) {
        if k.is_empty() || k.len() > 255 {
            return Err(ApiError::bad(c, "expected a name of 1 to 255 characters"));
        }
    }
    Ok(RowsRequest {
        query: RowsQuery {
            start,
            stop,
            key,
            order,
            offset: 0,
            length: rows_per_page,
        },
        limit,
        page,
        rows_per_page,
        capped,
    })
}

/// Where a page lies: (offset, length, pages), or the 400 of a page past the end.
pub fn paginate(
    total: u64,
    limit: Option<u64>,
    page: u64,
    rows_per_page: u64,
) -> Result<(u64, u64, u64), ApiError> {
    let items = limit.map_or(total, |l| l.min(total));
    let pages = items.div_ceil(rows_per_page).max(1);
    if page > pages {
        return Err(ApiError::bad(
            "page",
            format!(
                "page {page} is past the end: there are {pages} page(s) of {rows_per_page} rows"
            ),
        ));
    }
    let offset = (page - 1) * rows_per_page;
    Ok((
        offset,
        rows_per_page.min(items.saturating_sub(offset)),
        pages,
    ))
}

/// A JSON-P callback must be a JavaScript name (dotted).
fn check_callback(callback: &str) -> Result<(), ApiError> {
    let ok = !callback.is_empty()
        && callback.len() <= 128
        && callback
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c))
        && !callback.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "callback",
            "expected a JavaScript function name (letters, digits, _ $ .)",
        ))
    }
}

fn csv_field(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Rows as CSV: a header `timestamp,<other columns sorted>`, then one line
/// per row, fields quoted when they hold commas, quotes or newlines
/// (statscache wrote them unquoted).
pub fn to_csv(rows: &[Value], columns: &[&str]) -> String {
    let mut out = columns.join(",");
    out.push('\n');
    for row in rows {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| csv_field(row.get(*c).unwrap_or(&Value::Null)))
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn cors(builder: &mut fedhub::actix_web::HttpResponseBuilder) {
    builder
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header((
            "Access-Control-Expose-Headers",
            "Link, X-Link-Number, X-Link-Count, X-Capped, Server-Timing",
        ));
}

fn respond(
    format: Format,
    callback: Option<&str>,
    body: &Value,
    csv: impl FnOnce() -> String,
) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    cors(&mut builder);
    match (format, callback) {
        (Format::Csv, _) => builder.content_type("text/csv; charset=utf-8").body(csv()),
        (_, Some(cb)) => builder
            .content_type("application/javascript")
            .body(format!("{cb}({body})")),
        (Format::Javascript, None) => builder
            .content_type("application/javascript")
            .body(body.to_string()),
        (Format::Json, None) => builder
            .content_type("application/json")
            .body(body.to_string()),
    }
}

fn error_response(e: &ApiError, metrics: &Metrics) -> HttpResponse {
    metrics.bad_requests.with_label_values(&[&e.reason()]).inc();
    let mut builder =
        HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST));
    cors(&mut builder);
    if e.status == 406 {
        return builder.content_type("text/plain").body(e.message.clone());
    }
    let mut body = json!({"error": e.message, "status": e.status});
    if let Some(p) = &e.parameter {
        body["parameter"] = json!(p);
    }
    if let Some((k, v)) = &e.extra {
        body[k] = v.clone();
    }
    builder
        .content_type("application/json")
        .body(body.to_string())
}

fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The format and callback of a request.
fn format_of(
    req: &HttpRequest,
    pairs: &[(String, String)],
) -> Result<(Format, Option<String>), ApiError> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let accept = req.headers().get("accept").and_then(|v| v.to_str().ok());
    let format = negotiate(get("format"), accept)?;
    let callback = get("callback").map(str::to_string);
    if let Some(cb) = &callback {
        check_callback(cb)?;
    }
    Ok((format, callback))
}

/// Everything a handler needs.
#[derive(Clone)]
struct Api {
    infos: Arc<Vec<PluginInfo>>,
    reader: Arc<Mutex<Option<Arc<Reader>>>>,
    progress: Arc<BackfillProgress>,
    metrics: Metrics,
    options: ApiOptions,
}

impl Api {
    fn plugin(&self, ident: &str) -> Result<&PluginInfo, ApiError> {
        self.infos
            .iter()
            .find(|i| i.ident == ident)
            .ok_or_else(|| ApiError {
                status: 404,
                parameter: None,
                message: format!(
                    "No such model for {ident:?}: expected one of the idents listed in \"idents\""
                ),
                extra: Some((
                    "idents".into(),
                    json!(self.infos.iter().map(|i| &i.ident).collect::<Vec<_>>()),
                )),
            })
    }

    fn reader(&self) -> Result<Arc<Reader>, ApiError> {
        self.reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ApiError {
                status: 503,
                parameter: None,
                message: "the statistics database is not open yet".into(),
                extra: None,
            })
    }

    fn index(&self, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let pairs = query_pairs(req);
        let (format, callback) = format_of(req, &pairs)?;
        let body = json!(self.infos.as_ref());
        Ok(respond(format, callback.as_deref(), &body, || {
            let rows: Vec<Value> = self.infos.iter().map(|i| json!(i)).collect();
            to_csv(
                &rows,
                &["ident", "name", "summary", "description", "window"],
            )
        }))
    }

    async fn rows(&self, req: HttpRequest, ident: String) -> Result<HttpResponse, ApiError> {
        let began = Instant::now();
        let info = self.plugin(&ident)?.clone();
        let pairs = query_pairs(&req);
        let (format, callback) = format_of(&req, &pairs)?;
        let key_column = match info.shape {
            Shape::Counts { key } => key,
            Shape::Latest => Some("category"),
        };
        // The default stop is now, or for a windowed plugin the end of the
        // window open now (its rows are labelled with their end).
        let now = crate::now_secs();
        let default_stop = info.window_value.map_or(now, |w| w.bucket_end(now) as f64);
        let mut request = parse_rows(&pairs, key_column, &self.options, default_stop)?;
        let reader = self.reader()?;
        let shape = info.shape;
        let (page, rpp, limit) = (request.page, request.rows_per_page, request.limit);
        let query = request.query.clone();
        let result = web::block(move || -> Result<_, ApiError> {
            // Count, then read the page: statscache's slicing, fixed (offset and length).
            let mut q = query;
            q.length = 0;
            let (total, _) = reader.rows(&ident, shape, &q).map_err(db_error)?;
            let (offset, length, pages) = paginate(total, limit, page, rpp)?;
            q.offset = offset;
            q.length = length;
            let rows = if length == 0 {
                Vec::new()
            } else {
                reader.rows(&ident, shape, &q).map_err(db_error)?.1
            };
            Ok((rows, pages))
        })
        .await
        .map_err(|e| ApiError {
            status: 500,
            parameter: None,
            message: e.to_string(),
            extra: None,
        })?;
        let (rows, pages) = result?;
        request.query.length = rows.len() as u64;
        let values: Vec<Value> = rows.iter().map(|r| r.to_json(shape)).collect();
        let mut response = respond(
            format,
            callback.as_deref(),
            &Value::Array(values.clone()),
            || to_csv(&values, &shape.columns()),
        );
        let headers = response.headers_mut();
        let mut links = Vec::new();
        if page > 1 {
            links.push(format!(
                "<{}>; rel=\"previous\"",
                page_link(&req, &pairs, page - 1)
            ));
        }
        if page < pages {
            links.push(format!(
                "<{}>; rel=\"next\"",
                page_link(&req, &pairs, page + 1)
            ));
        }
        use fedhub::actix_web::http::header::{HeaderName, HeaderValue};
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        if !links.is_empty() {
            set("link", links.join(", "));
        }
        set("x-link-count", pages.to_string());
        set("x-link-number", page.to_string());
        if !request.capped.is_empty() {
            set("x-capped", request.capped.join(", "));
        }
        set(
            "server-timing",
            format!("app;dur={:.3}", began.elapsed().as_secs_f64() * 1000.0),
        );
        Ok(response)
    }

    async fn latest(&self, req: HttpRequest, ident: String) -> Result<HttpResponse, ApiError> {
        let began = Instant::now();
        let info = self.plugin(&ident)?.clone();
        let pairs = query_pairs(&req);
        let (format, callback) = format_of(&req, &pairs)?;
        let key_column = match info.shape {
            Shape::Counts { key } => key,
            Shape::Latest => Some("category"),
        };
        for (k, _) in &pairs {
            if !matches!(k.as_str(), "callback" | "format" | "_") && Some(k.as_str()) != key_column
            {
                return Err(ApiError::bad(
                    k,
                    format!(
                        "unknown parameter; expected callback, format{}",
                        key_column.map(|c| format!(" or {c}")).unwrap_or_default()
                    ),
                ));
            }
        }
        let key = key_column
            .and_then(|c| pairs.iter().find(|(k, _)| k == c))
            .map(|(_, v)| v.clone());
        let reader = self.reader()?;
        let (shape, max) = (info.shape, self.options.max_limit);
        let rows: Vec<Row> = web::block(move || {
            reader
                .latest(&ident, shape, key.as_deref(), max)
                .map_err(db_error)
        })
        .await
        .map_err(|e| ApiError {
            status: 500,
            parameter: None,
            message: e.to_string(),
            extra: None,
        })??;
        let values: Vec<Value> = rows.iter().map(|r| r.to_json(shape)).collect();
        let mut response = respond(
            format,
            callback.as_deref(),
            &Value::Array(values.clone()),
            || to_csv(&values, &shape.columns()),
        );
        if let Ok(v) = fedhub::actix_web::http::header::HeaderValue::from_str(&format!(
            "app;dur={:.3}",
            began.elapsed().as_secs_f64() * 1000.0
        )) {
            response.headers_mut().insert(
                fedhub::actix_web::http::header::HeaderName::from_static("server-timing"),
                v,
            );
        }
        Ok(response)
    }

    fn layout(&self, req: &HttpRequest, ident: &str) -> Result<HttpResponse, ApiError> {
        let info = self.plugin(ident)?;
        let pairs = query_pairs(req);
        let (format, callback) = format_of(req, &pairs)?;
        if format == Format::Csv {
            return Err(ApiError {
                status: 406,
                parameter: None,
                message: format!("Content-type(s) not available for {ident}: a layout is JSON"),
                extra: None,
            });
        }
        let layout = info.layout.clone().ok_or_else(|| ApiError {
            status: 404,
            parameter: None,
            message: format!("plugin {ident:?} has no layout"),
            extra: None,
        })?;
        Ok(respond(format, callback.as_deref(), &layout, String::new))
    }
}

fn db_error(e: fedhub_storage::StorageError) -> ApiError {
    ApiError {
        status: 503,
        parameter: None,
        message: fedhub::error_chain(&e),
        extra: None,
    }
}

/// The request's path and query with `page` replaced: the `Link` targets.
fn page_link(req: &HttpRequest, pairs: &[(String, String)], page: u64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
        query.append_pair(k, v);
    }
    query.append_pair("page", &page.to_string());
    format!("{}?{}", req.path(), query.finish())
}

/// The routes, relative to `/statscache`.
pub fn routes(
    infos: Arc<Vec<PluginInfo>>,
    reader: Arc<Mutex<Option<Arc<Reader>>>>,
    progress: Arc<BackfillProgress>,
    metrics: Metrics,
    options: ApiOptions,
) -> HttpRoutes {
    let api = Api {
        infos,
        reader,
        progress,
        metrics,
        options,
    };
    Arc::new(move |cfg: &mut web::ServiceConfig| {
        let page = api.clone();
        cfg.service(
            web::resource(["", "/"]).route(web::get().to(move |req: HttpRequest| {
                let body = crate::page::render(&page.infos, &req);
                async move {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(body)
                }
            })),
        );
        let a = api.clone();
        cfg.service(web::resource(["/api", "/api/"]).route(web::get().to(
            move |req: HttpRequest| {
                let response = a
                    .index(&req)
                    .unwrap_or_else(|e| error_response(&e, &a.metrics));
                async move { response }
            },
        )));
        let a = api.clone();
        cfg.service(
            web::resource("/api/_backfill").route(web::get().to(move || {
                let body = json!(a.progress.get()).to_string();
                async move {
                    HttpResponse::Ok()
                        .insert_header(("Access-Control-Allow-Origin", "*"))
                        .content_type("application/json")
                        .body(body)
                }
            })),
        );
        let a = api.clone();
        cfg.service(web::resource("/api/{ident}").route(web::get().to(
            move |req: HttpRequest, path: web::Path<String>| {
                let a = a.clone();
                async move {
                    a.rows(req, path.into_inner())
                        .await
                        .unwrap_or_else(|e| error_response(&e, &a.metrics))
                }
            },
        )));
        let a = api.clone();
        cfg.service(web::resource("/api/{ident}/latest").route(web::get().to(
            move |req: HttpRequest, path: web::Path<String>| {
                let a = a.clone();
                async move {
                    a.latest(req, path.into_inner())
                        .await
                        .unwrap_or_else(|e| error_response(&e, &a.metrics))
                }
            },
        )));
        let a = api.clone();
        cfg.service(web::resource("/api/{ident}/layout").route(web::get().to(
            move |req: HttpRequest, path: web::Path<String>| {
                let response = a
                    .layout(&req, &path)
                    .unwrap_or_else(|e| error_response(&e, &a.metrics));
                async move { response }
            },
        )));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
    const OPTIONS: ApiOptions = ApiOptions {
        default_rows_per_page: 100,
        max_rows_per_page: 100,
        max_limit: 1000,
    };

    #[test]
    fn negotiation_follows_statscache() {
        assert_eq!(negotiate(None, None).unwrap(), Format::Json);
        assert_eq!(negotiate(None, Some("*/*")).unwrap(), Format::Json);
        assert_eq!(negotiate(None, Some("text/csv")).unwrap(), Format::Csv);
        assert_eq!(
            negotiate(None, Some("text/csv;q=0.5, application/javascript")).unwrap(),
            Format::Javascript
        );
        assert_eq!(
            negotiate(Some("csv"), Some("application/json")).unwrap(),
            Format::Csv
        );
        assert_eq!(negotiate(None, Some("image/png")).unwrap_err().status, 406);
        assert_eq!(
            negotiate(Some("xml"), None)
                .unwrap_err()
                .parameter
                .as_deref(),
            Some("format")
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (q, parameter) in [
            ("start=yesterday", "start"),
            ("stop=NaN", "stop"),
            ("order=sideways", "order"),
            ("page=0", "page"),
            ("page=-1", "page"),
            ("rows_per_page=abc", "rows_per_page"),
            ("limit=0", "limit"),
            ("start=10&stop=5", "start"),
            ("colour=red", "colour"),
            ("page=1&page=2", "page"),
        ] {
            let e = parse_rows(&pairs(q), Some("user"), &OPTIONS, 100.0).unwrap_err();
            assert_eq!(e.status, 400, "{q}");
            assert_eq!(
                e.parameter.as_deref(),
                Some(parameter),
                "{q}: {}",
                e.message
            );
            assert!(e.message.starts_with(parameter), "{}", e.message);
        }
    }

    #[test]
    fn huge_sizes_are_capped_and_said() {
        let r = parse_rows(
            &pairs("rows_per_page=5000&limit=99999999&user=ralph"),
            Some("user"),
            &OPTIONS,
            100.0,
        )
        .unwrap();
        assert_eq!(r.rows_per_page, 100);
        assert_eq!(r.limit, Some(1000));
        assert_eq!(
            r.capped,
            [
                "limit=1000 (asked 99999999)",
                "rows_per_page=100 (asked 5000)"
            ]
        );
        assert_eq!(r.query.key.as_deref(), Some("ralph"));
        assert_eq!(r.query.stop, 100.0);
    }

    #[test]
    fn every_page_has_rows_and_past_the_end_is_refused() {
        // 250 rows, 100 per page: 100, 100, 50 (statscache returned nothing after page 1).
        assert_eq!(paginate(250, None, 1, 100).unwrap(), (0, 100, 3));
        assert_eq!(paginate(250, None, 2, 100).unwrap(), (100, 100, 3));
        assert_eq!(paginate(250, None, 3, 100).unwrap(), (200, 50, 3));
        assert_eq!(paginate(250, Some(120), 2, 100).unwrap(), (100, 20, 2));
        assert_eq!(paginate(0, None, 1, 100).unwrap(), (0, 0, 1));
        let e = paginate(250, None, 4, 100).unwrap_err();
        assert_eq!((e.status, e.parameter.as_deref()), (400, Some("page")));
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let rows = vec![
            json!({"timestamp": 1.0, "category": "a,b", "category_constraint": "x", "message": {"name": "say \"hi\""}}),
        ];
        let csv = to_csv(&rows, &Shape::Latest.columns());
        assert_eq!(csv, "timestamp,category,category_constraint,message\n1.0,\"a,b\",x,\"{\"\"name\"\":\"\"say \\\"\"hi\\\"\"\"\"}\"\n");
    }

    #[test]
    fn callbacks_must_be_names() {
        assert!(check_callback("jQuery123_cb.x").is_ok());
        assert!(check_callback("alert(1)//").is_err());
        assert!(check_callback("").is_err());
    }
}
