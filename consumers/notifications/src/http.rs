//! The notifications API, mounted under `/notifications`.
//!
//! Reading (always on):
//! - `GET /notifications/rules`: the rule library (code paths, titles, arguments);
//! - `GET /notifications/contexts`: the delivery contexts;
//! - `GET /notifications/users/<openid>`: a user's preferences, filters and
//!   rules as stored;
//! - `GET /notifications/cache`: the in-memory cache's figures;
//! - `GET /notifications/cache/<openid>`: a user's compiled filters, as
//!   matching uses them now;
//! - `GET /notifications/deliveries/dead`: dead-lettered deliveries.
//!
//! Changing (off unless `api_token` is set; then `Authorization: Bearer
//! <token>` is required, 401 otherwise). Each writes the store, reloads the
//! user here, and publishes FMN's invalidation message so every other hub
//! reloads that user too:
//! - `POST /notifications/users` `{openid, email?, irc?, webhook?}`: a user
//!   with FMN's defaults;
//! - `PATCH /notifications/users/<openid>/<context>`: preference fields
//!   (`enabled`, `batch_delta`, `batch_count`, `detail_values`, ...);
//! - `POST /notifications/users/<openid>/<context>/filters` `{name, oneshot, rules}`;
//! - `PATCH|DELETE /notifications/users/<openid>/<context>/filters/<id>`;
//! - `POST /notifications/users/<openid>/<context>/filters/<id>/rules`
//!   `{code_path, arguments, negated}`;
//! - `PATCH|DELETE /notifications/users/<openid>/<context>/filters/<id>/rules/<rule_id>`;
//! - `POST /notifications/deliveries/<id>/retry`.
//!
//! Database work runs on blocking threads, never on the HTTP workers.

use std::sync::Arc;

use fedhub::actix_web::http::StatusCode;
use fedhub::actix_web::{web, HttpRequest, HttpResponse};
use fedhub::HttpRoutes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::consumer::Shared;
use crate::model::{NewFilter, NewRule, PreferenceUpdate, CONTEXTS};
use crate::store::ChangeError;

fn error(status: u16, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(json!({"error": message.into()}))
}

fn change_error(e: ChangeError) -> HttpResponse {
    let status = match &e {
        ChangeError::UnknownUser(_)
        | ChangeError::UnknownFilter { .. }
        | ChangeError::UnknownRule { .. } => 404,
        ChangeError::UnknownContext(..) | ChangeError::Invalid(_) => 400,
        ChangeError::Storage(_) => 503,
    };
    error(status, fedhub::error_chain(&e))
}

/// Whether the request may change things: a token is configured and given.
fn authorize(shared: &Shared, req: &HttpRequest) -> Result<(), Box<HttpResponse>> {
    if shared.api_token.is_empty() {
        return Err(Box::new(error(
            403,
            "changing endpoints are off: set api_token in [consumers.FMNConsumer] to enable them",
        )));
    }
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), shared.api_token.as_bytes()) {
        return Err(Box::new(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer realm=\"fedhub notifications\""))
                .json(json!({"error": "expected the header Authorization: Bearer <api_token>"})),
        ));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body of a changing request, once the request is authorized.
fn authorized_body<T: DeserializeOwned>(
    shared: &Shared,
    req: &HttpRequest,
    body: &[u8],
    what: &str,
) -> Result<T, Box<HttpResponse>> {
    authorize(shared, req)?;
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(400, format!("request body: {e}: expected {what}"))))
}

/// Runs a change on a blocking thread; on success announces it (FMN's
/// invalidation message: title, openid, context, changed) and answers `ok`.
async fn apply<T: serde::Serialize + Send + 'static>(
    shared: Shared,
    (title, openid, context, changed): (&'static str, String, String, String),
    f: impl FnOnce(&Shared) -> Result<T, ChangeError> + Send + 'static,
) -> HttpResponse {
    let result = web::block(move || {
        let value = f(&shared)?;
        let published = shared.announce(title, &openid, &context, &changed);
        Ok::<_, ChangeError>((value, published))
    })
    .await;
    match result {
        Ok(Ok((value, Ok(())))) => HttpResponse::Ok().json(json!({"ok": value})),
        Ok(Ok((value, Err(e)))) => HttpResponse::Ok().json(json!({"ok": value, "warning": format!("{e}: other hubs reload this user only when they next see an invalidation for it")})),
        Ok(Err(e)) => change_error(e),
        Err(e) => error(500, e.to_string()),
    }
}

/// The body of `POST /notifications/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    openid: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    irc: Option<String>,
    #[serde(default)]
    webhook: Option<String>,
}

/// The body of a filter change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterChange {
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    oneshot: Option<bool>,
}

/// The body of a rule change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleChange {
    negated: bool,
}

type Pref = web::Path<(String, String)>;
type FilterPath = web::Path<(String, String, i64)>;
type RulePath = web::Path<(String, String, i64, i64)>;

/// The routes, relative to `/notifications`.
pub fn routes(shared: Shared) -> HttpRoutes {
    Arc::new(move |cfg: &mut web::ServiceConfig| {
        let s = shared.clone();
        cfg.service(web::resource("/rules").route(web::get().to(move || {
            let doc = s.cache.library().describe();
            async move { HttpResponse::Ok().json(doc) }
        })));
        cfg.service(
            web::resource("/contexts")
                .route(web::get().to(|| async { HttpResponse::Ok().json(CONTEXTS) })),
        );
        let s = shared.clone();
        cfg.service(web::resource("/cache").route(web::get().to(move || {
            let c = s.cache.counters();
            let o = s.ownership.counters();
            use std::sync::atomic::Ordering::Relaxed;
            let doc = json!({
                "users": s.cache.user_count(),
                "filters": s.cache.filter_count(),
                "index_keys": s.cache.index_keys(),
                "unindexed_users": s.cache.unindexed_count(),
                "rule_cache": {"hits": c.rule_hits.load(Relaxed), "misses": c.rule_misses.load(Relaxed), "errors": c.rule_errors.load(Relaxed)},
                "candidates_evaluated": c.candidates.load(Relaxed),
                "reloads": {"user": c.user_reloads.load(Relaxed), "full": c.full_loads.load(Relaxed), "seconds": c.reload_micros.load(Relaxed) as f64 / 1e6},
                "ownership": {"source": s.ownership.describe(), "hits": o.hits.load(Relaxed), "misses": o.misses.load(Relaxed), "errors": o.errors.load(Relaxed), "invalidations": o.invalidations.load(Relaxed)},
                "deliveries_pending": s.deliverer.pending_count(),
            });
            async move { HttpResponse::Ok().json(doc) }
        })));
        let s = shared.clone();
        cfg.service(web::resource("/cache/{openid}").route(web::get().to(
            move |openid: web::Path<String>| {
                let doc = s.cache.describe_user(&openid);
                let openid = openid.into_inner();
                async move {
                    match doc {
                        Some(d) => HttpResponse::Ok().json(d),
                        None => error(404, format!("{openid:?} has no sendable preference in memory (unknown user, or every preference disabled or without a detail value)")),
                    }
                }
            },
        )));
        let s = shared.clone();
        cfg.service(web::resource("/users/{openid}").route(web::get().to(
            move |openid: web::Path<String>| {
                let store = s.store.clone();
                let openid = openid.into_inner();
                async move {
                    let lookup = openid.clone();
                    match web::block(move || {
                        Ok::<_, fedhub_storage::StorageError>((
                            store.user_exists(&lookup)?,
                            store.load_user(&lookup)?,
                        ))
                    })
                    .await
                    {
                        Ok(Ok((false, _))) => error(404, format!("no user {openid:?}")),
                        Ok(Ok((true, prefs))) => {
                            HttpResponse::Ok().json(json!({"openid": openid, "preferences": prefs}))
                        }
                        Ok(Err(e)) => error(
                            503,
                            format!("notifications database: {}", fedhub::error_chain(&e)),
                        ),
                        Err(e) => error(500, e.to_string()),
                    }
                }
            },
        )));
        let s = shared.clone();
        cfg.service(web::resource("/users").route(web::post().to(
            move |req: HttpRequest, body: web::Bytes| {
                let s = s.clone();
                async move {
                    let user: NewUser = match authorized_body(
                        &s,
                        &req,
                        &body,
                        "{\"openid\": ..., \"email\"?: ..., \"irc\"?: ..., \"webhook\"?: ...}",
                    ) {
                        Ok(u) => u,
                        Err(r) => return *r,
                    };
                    let mut details = Vec::new();
                    for (ctx, value) in [
                        ("email", &user.email),
                        ("irc", &user.irc),
                        ("webhook", &user.webhook),
                    ] {
                        if let Some(v) = value {
                            details.push((ctx.to_string(), v.clone()));
                        }
                    }
                    let openid = user.openid.clone();
                    apply(
                        s,
                        (
                            "fmn.preference.update",
                            openid.clone(),
                            "email".into(),
                            "filters".into(),
                        ),
                        move |s| s.store.create_user(&openid, &details, s.cache.library()),
                    )
                    .await
                }
            },
        )));
        let s = shared.clone();
        cfg.service(web::resource("/users/{openid}/{context}").route(web::patch().to(
            move |req: HttpRequest, path: Pref, body: web::Bytes| {
                let s = s.clone();
                async move {
                    let (openid, context) = path.into_inner();
                    let update: PreferenceUpdate = match authorized_body(&s, &req, &body, "an object of enabled, batch_delta, batch_count, markup_messages, triggered_by_links, shorten_links, verbose, detail_values") {
                        Ok(u) => u,
                        Err(r) => return *r,
                    };
                    let changed = describe_update(&update);
                    let (o, c) = (openid.clone(), context.clone());
                    apply(
                        s,
                        ("fmn.preference.update", openid, context, changed),
                        move |s| s.store.update_preference(&o, &c, &update),
                    )
                    .await
                }
            },
        )));
        let s = shared.clone();
        cfg.service(web::resource("/users/{openid}/{context}/filters").route(web::post().to(
            move |req: HttpRequest, path: Pref, body: web::Bytes| {
                let s = s.clone();
                async move {
                    let (openid, context) = path.into_inner();
                    let filter: NewFilter = match authorized_body(&s, &req, &body, "{\"name\": ..., \"oneshot\"?: bool, \"rules\": [{\"code_path\": \"fmn.rules:...\", \"arguments\"?: {...}, \"negated\"?: bool}]}") {
                        Ok(f) => f,
                        Err(r) => return *r,
                    };
                    let (o, c) = (openid.clone(), context.clone());
                    apply(
                        s,
                        ("fmn.preference.update", openid, context, "filters".into()),
                        move |s| s.store.add_filter(&o, &c, &filter, s.cache.library()),
                    )
                    .await
                }
            },
        )));
        let s = shared.clone();
        let s2 = shared.clone();
        cfg.service(
            web::resource("/users/{openid}/{context}/filters/{filter_id}")
                .route(web::patch().to(
                    move |req: HttpRequest, path: FilterPath, body: web::Bytes| {
                        let s = s.clone();
                        async move {
                            let (openid, context, id) = path.into_inner();
                            let change: FilterChange = match authorized_body(
                                &s,
                                &req,
                                &body,
                                "{\"active\"?: bool, \"oneshot\"?: bool}",
                            ) {
                                Ok(c) => c,
                                Err(r) => return *r,
                            };
                            let (o, c) = (openid.clone(), context.clone());
                            apply(
                                s,
                                ("fmn.filter.update", openid, context, "filter".into()),
                                move |s| {
                                    s.store
                                        .set_filter(&o, &c, id, change.active, change.oneshot)
                                },
                            )
                            .await
                        }
                    },
                ))
                .route(web::delete().to(move |req: HttpRequest, path: FilterPath| {
                    let s = s2.clone();
                    async move {
                        if let Err(r) = authorize(&s, &req) {
                            return *r;
                        }
                        let (openid, context, id) = path.into_inner();
                        let (o, c) = (openid.clone(), context.clone());
                        apply(
                            s,
                            ("fmn.preference.update", openid, context, "filters".into()),
                            move |s| s.store.delete_filter(&o, &c, id),
                        )
                        .await
                    }
                })),
        );
        let s = shared.clone();
        cfg.service(web::resource("/users/{openid}/{context}/filters/{filter_id}/rules").route(web::post().to(
            move |req: HttpRequest, path: FilterPath, body: web::Bytes| {
                let s = s.clone();
                async move {
                    let (openid, context, id) = path.into_inner();
                    let rule: NewRule = match authorized_body(&s, &req, &body, "{\"code_path\": \"fmn.rules:...\", \"arguments\"?: {...}, \"negated\"?: bool}") {
                        Ok(r) => r,
                        Err(r) => return *r,
                    };
                    let (o, c) = (openid.clone(), context.clone());
                    apply(
                        s,
                        ("fmn.filter.update", openid, context, "rules".into()),
                        move |s| s.store.add_rule(&o, &c, id, &rule, s.cache.library()),
                    )
                    .await
                }
            },
        )));
        let s = shared.clone();
        let s2 = shared.clone();
        cfg.service(
            web::resource("/users/{openid}/{context}/filters/{filter_id}/rules/{rule_id}")
                .route(web::patch().to(
                    move |req: HttpRequest, path: RulePath, body: web::Bytes| {
                        let s = s.clone();
                        async move {
                            let (openid, context, filter, rule) = path.into_inner();
                            let change: RuleChange =
                                match authorized_body(&s, &req, &body, "{\"negated\": bool}") {
                                    Ok(c) => c,
                                    Err(r) => return *r,
                                };
                            let (o, c) = (openid.clone(), context.clone());
                            apply(
                                s,
                                ("fmn.rule.update", openid, context, "negated".into()),
                                move |s| {
                                    s.store
                                        .set_rule_negated(&o, &c, filter, rule, change.negated)
                                },
                            )
                            .await
                        }
                    },
                ))
                .route(web::delete().to(move |req: HttpRequest, path: RulePath| {
                    let s = s2.clone();
                    async move {
                        if let Err(r) = authorize(&s, &req) {
                            return *r;
                        }
                        let (openid, context, filter, rule) = path.into_inner();
                        let (o, c) = (openid.clone(), context.clone());
                        apply(
                            s,
                            ("fmn.filter.update", openid, context, "rules".into()),
                            move |s| s.store.delete_rule(&o, &c, filter, rule),
                        )
                        .await
                    }
                })),
        );
        let s = shared.clone();
        cfg.service(
            web::resource("/deliveries/dead").route(web::get().to(move || {
                let deliverer = s.deliverer.clone();
                async move {
                    match web::block(move || deliverer.dead_letters(1000)).await {
                        Ok(Ok(dead)) => HttpResponse::Ok().json(dead),
                        Ok(Err(e)) => error(503, fedhub::error_chain(&e)),
                        Err(e) => error(500, e.to_string()),
                    }
                }
            })),
        );
        let s = shared.clone();
        cfg.service(
            web::resource("/deliveries/{id}/retry").route(web::post().to(
                move |req: HttpRequest, id: web::Path<i64>| {
                    let s = s.clone();
                    async move {
                        if let Err(r) = authorize(&s, &req) {
                            return *r;
                        }
                        let id = id.into_inner();
                        let deliverer = s.deliverer.clone();
                        match web::block(move || deliverer.retry_dead(id)).await {
                            Ok(Ok(true)) => HttpResponse::Ok().json(json!({"ok": id})),
                            Ok(Ok(false)) => error(404, format!("no dead-lettered delivery {id}")),
                            Ok(Err(e)) => error(503, fedhub::error_chain(&e)),
                            Err(e) => error(500, e.to_string()),
                        }
                    }
                },
            )),
        );
    })
}

fn describe_update(update: &PreferenceUpdate) -> String {
    let mut changed = Vec::new();
    if update.enabled.is_some() {
        changed.push("enabled");
    }
    if update.batch_delta.is_some() || update.batch_count.is_some() {
        changed.push("batch_values");
    }
    for (v, name) in [
        (update.markup_messages, "markup_messages"),
        (update.triggered_by_links, "triggered_by_links"),
        (update.shorten_links, "shorten_links"),
        (update.verbose, "verbose"),
    ] {
        if v.is_some() {
            changed.push(name);
        }
    }
    if update.detail_values.is_some() {
        changed.push("details");
    }
    changed.join(",")
}
