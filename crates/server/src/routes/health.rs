//! `GET /api/v1/health`, `GET /api/v1/time` and `GET /metrics`.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::responses::{Guarded, RateLimited};
use crate::config::Role;
use crate::state::AppState;

/// Longest a health probe waits for the local trading engine's summary (an engine node); the
/// probe answers promptly even when the engine actor is stuck.
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest a `/metrics` scrape waits for the local engine's portfolio summary; without it the
/// portfolio gauges are left out of that scrape.
const METRICS_SUMMARY_TIMEOUT: Duration = Duration::from_secs(1);

/// Reports liveness and the state of the market feed, the trading engine and (with Redis) the
/// broker link; 503 when degraded. Never waits for a remote round trip: a gateway node reports
/// the engine from its cached view (the engine's liveness mark in Redis, read on every poll of
/// the streams), and is degraded at once while its broker is down, since it can then neither
/// stream nor reach the engine.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    operation_id = "health",
    summary = "Liveness and the state of the feed, the engine and the broker",
    responses(
        (status = 200, description = "healthy", body = super::schemas::HealthBody),
        (status = 503, description = "degraded", body = super::schemas::HealthBody),
        RateLimited,
    )
)]
pub(super) async fn health(state: web::Data<AppState>) -> HttpResponse {
    let broker_connected = state.broker_connected();
    let symbols = state.market.symbols();
    let priced = state.market.tickers().await.len();
    let engine_ok = match state.followed_engine_alive() {
        Some(alive) => broker_connected == Some(true) && alive,
        None => tokio::time::timeout(ENGINE_PROBE_TIMEOUT, state.portfolio.summary())
            .await
            .is_ok_and(|summary| summary.is_ok()),
    };
    let status = if engine_ok { "ok" } else { "degraded" };
    let mut body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started_at.elapsed().as_secs(),
        "role": state.role.as_str(),
        "market": {
            "source": state.market_source,
            "symbols": symbols,
            "priced_symbols": priced,
            "feed": state.feed.status(),
        },
        "trading_engine": if engine_ok { "ok" } else { "unavailable" },
    });
    if let Some(connected) = broker_connected {
        body["broker"] = json!({ "connected": connected });
    }
    if engine_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Liveness: the process serves HTTP. Answers at once and checks nothing else, so a stuck engine
/// or a lost broker (readiness) never gets a healthy process restarted.
#[utoipa::path(
    method(get, head),
    path = "/livez",
    operation_id = "livez",
    summary = "Liveness: the process serves",
    responses(
        (status = 200, description = "serving", body = super::schemas::LivenessBody),
        RateLimited,
    )
)]
pub(super) async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Longest each readiness check may take; they run at once, so `/readyz` answers within it.
const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Readiness: whether this node can do its job now. Engine and all roles: the engine answers
/// within [`READY_CHECK_TIMEOUT`], the market feed is connected and fresh, and the storage
/// commits a write (so a full disk shows here before a trade fails); a gateway: its broker link
/// is up and the engine's liveness mark is in Redis (its cached view: no round trip). With Redis,
/// the broker link is checked on every role. 503 when any check fails; each says why.
#[utoipa::path(
    method(get, head),
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness: engine, broker, feed and storage",
    responses(
        (status = 200, description = "ready", body = super::schemas::ReadinessBody),
        (status = 503, description = "not ready; `checks` says why", body = super::schemas::ReadinessBody),
        RateLimited,
    )
)]
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = serde_json::Map::new();
    let broker_connected = state.broker_connected();
    if let Some(connected) = broker_connected {
        checks.insert(
            "broker".into(),
            json!(if connected { "ok" } else { "disconnected" }),
        );
    }
    match state.followed_engine_alive() {
        Some(alive) => {
            let engine = match (broker_connected, alive) {
                (Some(false), _) => "unreachable: broker disconnected",
                (_, false) => "no engine alive",
                _ => "ok",
            };
            checks.insert("engine".into(), json!(engine));
        }
        None => {
            let (engine, storage) = tokio::join!(
                tokio::time::timeout(READY_CHECK_TIMEOUT, state.portfolio.summary()),
                tokio::time::timeout(READY_CHECK_TIMEOUT, state.trade.probe_storage()),
            );
            let engine = match engine {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(err)) => format!("unavailable: {err}"),
                Err(_) => "timeout".to_owned(),
            };
            let storage = match storage {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timeout".to_owned(),
            };
            let feed = state.feed.status();
            let feed = if !feed.connected {
                "disconnected"
            } else if feed.stale {
                "stale"
            } else {
                "ok"
            };
            checks.insert("engine".into(), json!(engine));
            checks.insert("feed".into(), json!(feed));
            checks.insert("storage".into(), json!(storage));
        }
    }
    let ready = checks.values().all(|check| check == "ok");
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "role": state.role.as_str(),
        "checks": checks,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Returns the server's clock, so a client can measure its offset: `server_time` (RFC 3339, UTC),
/// `timestamp` (seconds) and `ts_us` (microseconds), the WebSocket `pong`'s fields.
#[utoipa::path(
    get,
    path = "/api/v1/time",
    operation_id = "time",
    summary = "The server's clock",
    responses(
        (status = 200, description = "the clock", body = super::schemas::TimeBody),
        RateLimited,
    )
)]
pub(super) async fn time() -> HttpResponse {
    let now = chrono::Utc::now();
    HttpResponse::Ok().json(json!({
        "server_time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "timestamp": now.timestamp(),
        "ts_us": now.timestamp_micros(),
    }))
}

/// Renders this node's counters, gauges and histograms in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Counters, gauges and histograms in the Prometheus text format",
    responses(
        (status = 200, description = "metrics", body = String, content_type = "text/plain"),
        Guarded,
    )
)]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The portfolio belongs to the engine: a gateway leaves it to the engine node.
    let summary = if state.role == Role::Gateway {
        None
    } else {
        tokio::time::timeout(METRICS_SUMMARY_TIMEOUT, state.portfolio.summary())
            .await
            .ok()
            .and_then(Result::ok)
    };
    let out = crate::exposition::encode(&state.registry, summary.as_ref());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
