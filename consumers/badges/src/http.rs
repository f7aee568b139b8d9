//! The badges API, mounted under `/badges`:
//!
//! - `GET /badges/user/<name>`: a person's badges (JSON), 404 if unknown;
//! - `GET /badges/badge/<id>`: a badge and its holders, 404 if unknown;
//! - `GET /badges/rules`: the loaded rules with their counters, the load
//!   errors, the awarder's counters (duplicates and old messages ignored)
//!   and the leaderboard passes' (`ranks`);
//! - `GET /badges/leaderboard`: ranked people, best first (`?limit=`, 1 to 1000,
//!   default 100).
//!
//! Database reads run on blocking threads, never on the HTTP workers.

use std::sync::Arc;

use fedhub::actix_web::{web, HttpRequest, HttpResponse};
use fedhub::HttpRoutes;
use serde_json::{json, Value};

use crate::awarder::{Counters, SharedRules};
use crate::ranks::RankKeeper;
use crate::tahrir::Tahrir;

/// What the routes read.
#[derive(Clone)]
pub struct Api {
    /// The badge tables.
    pub tahrir: Tahrir,
    /// The rules in force.
    pub rules: SharedRules,
    /// The awarder's counters.
    pub counters: Arc<Counters>,
    /// The leaderboard's keeper (its passes).
    pub ranks: Arc<RankKeeper>,
}

fn error(status: u16, message: String) -> HttpResponse {
    HttpResponse::build(
        fedhub::actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(fedhub::actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(json!({"error": message}))
}

async fn blocking(
    f: impl FnOnce() -> Result<Option<Value>, fedhub_storage::StorageError> + Send + 'static,
    missing: String,
) -> HttpResponse {
    match web::block(f).await {
        Ok(Ok(Some(v))) => HttpResponse::Ok().json(v),
        Ok(Ok(None)) => error(404, missing),
        Ok(Err(e)) => error(503, format!("badge database: {}", fedhub::error_chain(&e))),
        Err(e) => error(500, e.to_string()),
    }
}

/// Whether a path segment is a plausible name or badge id.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

/// The routes, relative to `/badges`.
pub fn routes(api: Api) -> HttpRoutes {
    Arc::new(move |cfg: &mut web::ServiceConfig| {
        let a = api.clone();
        cfg.service(web::resource("/user/{name}").route(web::get().to(
            move |name: web::Path<String>| {
                let tahrir = a.tahrir.clone();
                let name = name.into_inner();
                async move {
                    if !valid_segment(&name) {
                        return error(
                            400,
                            "user: expected a user name of 1 to 128 characters".into(),
                        );
                    }
                    let missing = format!("no person named {name:?} holds a badge");
                    blocking(move || tahrir.person_badges(&name), missing).await
                }
            },
        )));
        let a = api.clone();
        cfg.service(web::resource("/badge/{id}").route(web::get().to(
            move |id: web::Path<String>| {
                let tahrir = a.tahrir.clone();
                let id = id.into_inner();
                async move {
                    if !valid_segment(&id) {
                        return error(
                            400,
                            "badge: expected a badge id of 1 to 128 characters".into(),
                        );
                    }
                    let missing = format!("no badge with id {id:?}");
                    blocking(move || tahrir.badge_holders(&id), missing).await
                }
            },
        )));
        let a = api.clone();
        cfg.service(web::resource("/rules").route(web::get().to(move || {
            let rules = a.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
            let mut doc = rules.to_json();
            doc["awarder"] = a.counters.to_json();
            doc["ranks"] = a.ranks.to_json();
            async move { HttpResponse::Ok().json(doc) }
        })));
        let a = api.clone();
        cfg.service(
            web::resource("/leaderboard").route(web::get().to(move |req: HttpRequest| {
                let tahrir = a.tahrir.clone();
                let query = req.query_string().to_string();
                async move {
                    let mut limit = 100i64;
                    for (k, v) in form_pairs(&query) {
                        match (k.as_str(), v.parse::<i64>()) {
                            ("limit", Ok(n)) if (1..=1000).contains(&n) => limit = n,
                            ("limit", _) => {
                                return error(400, format!("limit={v}: expected 1 to 1000"))
                            }
                            (other, _) => {
                                return error(
                                    400,
                                    format!("unknown parameter {other:?} (expected limit)"),
                                )
                            }
                        }
                    }
                    blocking(move || tahrir.leaderboard(limit).map(Some), String::new()).await
                }
            })),
        );
    })
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}
