//! `GET /api/v1/health`, `GET /api/v1/time` and `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::config::Role;
use crate::state::AppState;

/// Reports liveness and the state of the market feed, the trading engine and (with Redis) the
/// broker link; 503 when degraded. A gateway node whose broker is down is degraded at once: it can
/// neither stream nor reach the engine, and asking the engine would only wait for the timeout.
pub(super) async fn health(state: web::Data<AppState>) -> HttpResponse {
    let broker_connected = state
        .broker
        .as_ref()
        .map(|broker| broker.connected.load(Ordering::Relaxed) == 1);
    let cut_off = state.role == Role::Gateway && broker_connected == Some(false);
    let symbols = state.market.symbols();
    let priced = state.market.tickers().await.len();
    let engine_ok = !cut_off && state.portfolio.summary().await.is_ok();
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

/// Returns the server's clock, so a client can measure its offset: `server_time` (RFC 3339, UTC),
/// `timestamp` (seconds) and `ts_us` (microseconds), the WebSocket `pong`'s fields.
pub(super) async fn time() -> HttpResponse {
    let now = chrono::Utc::now();
    HttpResponse::Ok().json(json!({
        "server_time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "timestamp": now.timestamp(),
        "ts_us": now.timestamp_micros(),
    }))
}

/// Renders counters and gauges in the Prometheus text format.
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP cryptobot_uptime_seconds Seconds since the server started.\n# TYPE cryptobot_uptime_seconds gauge\ncryptobot_uptime_seconds {}",
        state.started_at.elapsed().as_secs()
    );
    if let Ok(summary) = state.portfolio.summary().await {
        let gauges = [
            (
                "cryptobot_portfolio_cash",
                "Free cash of the paper account.",
                summary.cash,
            ),
            (
                "cryptobot_portfolio_total_value",
                "Cash plus positions at market value.",
                summary.total_value,
            ),
            (
                "cryptobot_portfolio_realized_pnl",
                "Realized profit, fees included.",
                summary.realized_pnl,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
    state.metrics.render(&mut out);
    state.feed.render(&mut out);
    state.gateway.render_metrics(&mut out);
    if let Some(broker) = &state.broker {
        out.push_str(&broker.render());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
