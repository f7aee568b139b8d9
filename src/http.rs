//! The hub's HTTP surface: `/metrics`, `/health/livez`, `/health/readyz`, `/state`,
//! plus whatever routes consumers mount. Handlers only read the stats registry's
//! atomics, so a probe never waits behind message handling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{web, HttpResponse};

use crate::consumer::HttpRoutes;
use crate::stats::{unix_millis, Stats};

/// A consumer with a backlog and no progress for this long makes readyz fail.
pub const STALL_AFTER: Duration = Duration::from_secs(120);

/// Shared state for the built-in handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The stats registry.
    pub stats: Arc<Stats>,
    /// Names of the consumers that should be running.
    pub consumers: Arc<Vec<String>>,
}

/// Registers the built-in routes and the consumers' routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: HttpState, routes: &[HttpRoutes]) {
    cfg.app_data(web::Data::new(state))
        .route("/metrics", web::get().to(metrics))
        .route("/health/livez", web::get().to(livez))
        .route("/health/readyz", web::get().to(readyz))
        .route("/state", web::get().to(state_json));
    for route in routes {
        route(cfg);
    }
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
    let problems = readiness_problems(&state.stats, &state.consumers, SystemTime::now());
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

#[cfg(test)]
mod tests {
    use super::*;

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
