//! The hub's HTTP surface: `/metrics`, `/health/livez`, `/health/readyz`, `/state`,
//! the status page `/` (with its history, `/state/history`), plus each
//! consumer's routes under the prefix it declared. Any other path answers a
//! short JSON 404 listing the hub's endpoints. Handlers only read
//! the stats registry's atomics, so a probe never waits behind message handling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{web, HttpResponse};

use crate::config::ConfigError;
use crate::consumer::HttpRoutes;
use crate::stats::{unix_millis, Stats};
use crate::status::StatusHistory;

/// A consumer with a backlog and no progress for this long makes readyz fail.
pub const STALL_AFTER: Duration = Duration::from_secs(120);

/// Shared state for the built-in handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The stats registry.
    pub stats: Arc<Stats>,
    /// Names of the consumers that should be running.
    pub consumers: Arc<Vec<String>>,
    /// A bus with no endpoint connected for longer than this is not ready
    /// (`[bus] not_ready_after_disconnected_secs`; `None`: never).
    pub bus_unready_after: Option<Duration>,
    /// `[hub] name`, the status page's title.
    pub name: String,
    /// The counters' recent history the status page draws.
    pub history: Arc<StatusHistory>,
}

/// The paths the hub serves: its own routes and each consumer's prefix.
#[derive(Clone)]
struct Endpoints(Arc<Vec<String>>);

/// The hub's own routes: no consumer prefix may equal, contain or lie under one.
pub const HUB_ROUTES: [&str; 3] = ["/metrics", "/state", "/health"];

/// One consumer's routes and the prefix they are mounted under.
#[derive(Clone)]
pub struct MountedRoutes {
    /// Such as `/datagrepper`.
    pub prefix: String,
    /// The consumer's routes, relative to the prefix.
    pub routes: HttpRoutes,
}

/// Checks the HTTP prefixes consumers claim, `(consumer, prefix)`: each is a
/// path (`/name`, no trailing `/`, no pattern characters) that neither
/// overlaps another consumer's prefix nor a route of the hub. The error names
/// both claimants.
pub fn check_prefixes(claims: &[(&str, &str)]) -> Result<(), ConfigError> {
    for (i, (consumer, prefix)) in claims.iter().enumerate() {
        let well_formed = prefix.len() > 1
            && prefix.starts_with('/')
            && !prefix.ends_with('/')
            && !prefix.contains("//")
            && !prefix.contains(['{', '}', '*', '?', '#', ' ']);
        if !well_formed {
            return Err(ConfigError::Invalid(format!(
                "consumer {consumer} declares the HTTP prefix {prefix:?}: expected a path such as \"/{}\" (a leading '/', no trailing '/', no patterns)",
                consumer.to_ascii_lowercase()
            )));
        }
        if let Some(route) = HUB_ROUTES.iter().find(|route| overlaps(prefix, route)) {
            return Err(ConfigError::Invalid(format!(
                "consumer {consumer} claims the HTTP prefix {prefix}, which overlaps the hub's own route {route}"
            )));
        }
        if let Some((other, theirs)) = claims[..i].iter().find(|(_, p)| overlaps(prefix, p)) {
            return Err(ConfigError::Invalid(format!(
                "consumers {other} and {consumer} both claim HTTP paths under {}: {other} declares {theirs}, {consumer} declares {prefix}",
                if theirs.len() <= prefix.len() { theirs } else { prefix }
            )));
        }
    }
    Ok(())
}

/// Whether one path prefix equals the other or lies under it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Registers the built-in routes and each consumer's routes under its prefix.
pub fn configure(cfg: &mut web::ServiceConfig, state: HttpState, mounted: &[MountedRoutes]) {
    let mut endpoints: Vec<String> = [
        "/",
        "/metrics",
        "/state",
        "/state/history",
        "/health/livez",
        "/health/readyz",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    endpoints.extend(mounted.iter().map(|m| format!("{}/", m.prefix)));
    cfg.app_data(web::Data::new(state))
        .app_data(web::Data::new(Endpoints(Arc::new(endpoints))))
        .route("/", web::get().to(status_page))
        .route("/metrics", web::get().to(metrics))
        .route("/health/livez", web::get().to(livez))
        .route("/health/readyz", web::get().to(readyz))
        .route("/state", web::get().to(state_json))
        .route("/state/history", web::get().to(history_json));
    for mount in mounted {
        let routes = mount.routes.clone();
        cfg.service(web::scope(&mount.prefix).configure(move |scope| routes(scope)));
    }
    cfg.default_service(web::to(not_found));
}

/// Any path the hub does not serve: a short JSON 404 listing what it serves.
async fn not_found(request: actix_web::HttpRequest) -> HttpResponse {
    let endpoints = request
        .app_data::<web::Data<Endpoints>>()
        .map(|e| e.0.as_ref().clone())
        .unwrap_or_default();
    HttpResponse::NotFound().json(serde_json::json!({
        "error": "not found",
        "path": request.path(),
        "endpoints": endpoints,
        "hint": "a consumer's routes exist only while it runs: with -c, a consumer runs only when its [consumers.<Name>] section says enabled = true",
    }))
}

async fn status_page(state: web::Data<HttpState>, endpoints: web::Data<Endpoints>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(crate::status::page(&state.name, &endpoints.0))
}

async fn history_json(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.history.to_json())
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    match state.stats.render_prometheus() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            HttpResponse::InternalServerError().body(format!("cannot encode metrics: {e}\n"))
        }
    }
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"live": true}))
}

/// Reasons the hub is not ready, empty when it is.
pub fn readiness_problems(stats: &Stats, consumers: &[String], now: SystemTime) -> Vec<String> {
    let now_ms = unix_millis(now);
    let mut problems = Vec::new();
    for name in consumers {
        let c = stats.consumer(name);
        if !c.initialized() {
            problems.push(format!("consumer {name} is not initialized"));
            continue;
        }
        if let Some(problem) = c.problem() {
            problems.push(format!("consumer {name}: {problem}"));
        }
        if let Some(problem) = c.dead_letter_problem() {
            problems.push(format!("consumer {name}: {problem}"));
        }
        let last = c.last_progress_ms();
        let since = if last == 0 {
            unix_millis(stats.started_at())
        } else {
            last
        };
        if c.backlog() > 0 && now_ms.saturating_sub(since) > STALL_AFTER.as_millis() as u64 {
            problems.push(format!(
                "consumer {name} has a backlog of {} and made no progress for {} s",
                c.backlog(),
                now_ms.saturating_sub(since) / 1000
            ));
        }
    }
    problems
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let now = SystemTime::now();
    let mut problems = readiness_problems(&state.stats, &state.consumers, now);
    if let Some(after) = state.bus_unready_after {
        problems.extend(
            state
                .stats
                .buses()
                .iter()
                .filter_map(|bus| bus.connection_problem(after, now)),
        );
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({"ready": true}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "problems": problems}))
    }
}

async fn state_json(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats.state())
}

/// The per-request limits of `[http]` the [`limit_requests`] middleware
/// enforces (the connection limits are the server's own settings).
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// `[http] max_head_bytes`.
    pub max_head_bytes: usize,
    /// `[http] max_body_bytes`.
    pub max_body_bytes: usize,
    /// `[http] request_timeout_secs`.
    pub request_timeout: Duration,
}

impl RequestLimits {
    /// The limits `config` sets.
    pub fn new(config: &crate::config::HttpConfig) -> RequestLimits {
        RequestLimits {
            max_head_bytes: config.max_head_bytes,
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        }
    }

    /// The size of a request's head as it came: request line and headers.
    fn head_bytes(req: &actix_web::dev::ServiceRequest) -> usize {
        let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
        let headers: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        line + headers + 2
    }

    /// The response refusing `req` before any handler sees it, if it must be.
    fn refusal(&self, req: &actix_web::dev::ServiceRequest) -> Option<HttpResponse> {
        let head = Self::head_bytes(req);
        if head > self.max_head_bytes {
            return Some(refuse(
                crate::events::HttpRejectReason::HeadTooLarge,
                HttpResponse::build(actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                format!(
                    "request head of {head} bytes: expected at most {} ([http] max_head_bytes)",
                    self.max_head_bytes
                ),
            ));
        }
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = declared.filter(|l| *l > self.max_body_bytes as u64) {
            return Some(refuse(
                crate::events::HttpRejectReason::BodyTooLarge,
                HttpResponse::PayloadTooLarge(),
                format!(
                    "request body of {length} bytes: expected at most {} ([http] max_body_bytes)",
                    self.max_body_bytes
                ),
            ));
        }
        None
    }
}

/// Counts a refused request and builds its JSON error response.
fn refuse(
    reason: crate::events::HttpRejectReason,
    mut builder: actix_web::HttpResponseBuilder,
    error: String,
) -> HttpResponse {
    crate::events::HttpRequestRejected {
        reason,
        detail: &error,
    }
    .emit();
    builder
        .insert_header((actix_web::http::header::CONNECTION, "close"))
        .json(serde_json::json!({ "error": error }))
}

/// Middleware (`actix_web::middleware::from_fn`) enforcing [`RequestLimits`]
/// (from the app data): a head over `max_head_bytes` gets 431, a declared
/// body over `max_body_bytes` gets 413 before it is read (a chunked one is cut
/// by the extractors' limits, set to the same), and a request not answered
/// within `request_timeout` (a body sent too slowly, a handler too slow) gets
/// 408. Each is counted in `fedhub_http_requests_rejected_total{reason}`.
pub async fn limit_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let Some(limits) = req
        .app_data::<web::Data<RequestLimits>>()
        .map(|l| l.get_ref().clone())
    else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    if let Some(response) = limits.refusal(&req) {
        return Ok(req.into_response(response).map_into_right_body());
    }
    match actix_rt::time::timeout(limits.request_timeout, next.call(req)).await {
        Ok(response) => response.map(|r| r.map_into_left_body()),
        Err(_) => {
            let error = format!(
                "no response within {} s ([http] request_timeout_secs): the request body came too slowly, or its handler took too long",
                limits.request_timeout.as_secs()
            );
            let response = refuse(
                crate::events::HttpRejectReason::Timeout,
                HttpResponse::RequestTimeout(),
                error.clone(),
            );
            // The request went to the handler: the refusal travels as an error.
            Err(actix_web::error::InternalError::from_response(error, response).into())
        }
    }
}

/// Registers the request limits as app data: for [`limit_requests`], and as
/// the body limit of the `Bytes`, `String`, `Json` and `Form` extractors.
pub fn configure_limits(cfg: &mut web::ServiceConfig, config: &crate::config::HttpConfig) {
    cfg.app_data(web::Data::new(RequestLimits::new(config)))
        .app_data(web::PayloadConfig::new(config.max_body_bytes))
        .app_data(web::JsonConfig::default().limit(config.max_body_bytes))
        .app_data(web::FormConfig::default().limit(config.max_body_bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefixes that overlap each other or the hub's routes are refused, naming both.
    #[test]
    fn overlapping_prefixes_are_refused_naming_both() {
        let ok = [("Nommer", "/datagrepper"), ("StatsConsumer", "/statscache")];
        assert!(check_prefixes(&ok).is_ok());
        let same = [("Nommer", "/datagrepper"), ("Other", "/datagrepper")];
        let e = check_prefixes(&same).unwrap_err().to_string();
        assert!(e.contains("Nommer") && e.contains("Other"), "{e}");
        let nested = [("Nommer", "/datagrepper"), ("Other", "/datagrepper/raw")];
        let e = check_prefixes(&nested).unwrap_err().to_string();
        assert!(
            e.contains("Nommer") && e.contains("/datagrepper/raw"),
            "{e}"
        );
        // A shared beginning that is not a path segment is not an overlap.
        assert!(check_prefixes(&[("A", "/data"), ("B", "/datagrepper")]).is_ok());
        for hub_route in ["/metrics", "/health", "/health/readyz", "/state"] {
            let e = check_prefixes(&[("Greedy", hub_route)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("Greedy") && e.contains("hub's own route"), "{e}");
        }
        for bad in ["", "/", "datagrepper", "/datagrepper/", "/a//b", "/{id}"] {
            let e = check_prefixes(&[("Bad", bad)]).unwrap_err().to_string();
            assert!(
                e.contains("Bad") && e.contains("expected a path"),
                "{bad}: {e}"
            );
        }
    }

    /// A problem a consumer reports makes readyz fail with its reason, until cleared.
    #[test]
    fn consumer_problems_are_readiness_problems() {
        let stats = Stats::new();
        let c = stats.consumer("Nommer");
        c.set_initialized(true);
        let names = vec!["Nommer".to_string()];
        let now = SystemTime::now();
        assert!(readiness_problems(&stats, &names, now).is_empty());
        c.set_problem(Some("database is locked".into()));
        assert_eq!(
            readiness_problems(&stats, &names, now),
            vec!["consumer Nommer: database is locked".to_string()]
        );
        c.set_problem(None);
        assert!(readiness_problems(&stats, &names, now).is_empty());
    }
}
