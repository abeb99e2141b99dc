//! The upgrade handshake: the checks before a connection is admitted (attempt rate, connection
//! limits, origin, authentication, scopes), the upgrade itself and the start of the actor.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use cryptobot_access::{Principal, client_ip, retry_after_secs};
use tokio::time::Instant;

use crate::config::GatewayConfig;
use crate::connection::{Behaviour, Connection};
use crate::dispatch::Subscriptions;
use crate::fanout::{Port, WorkerFanout};
use crate::guards::{ActiveGuard, IpSlot};
use crate::inbound::{GuardedPayload, InboundBudget};
use crate::metrics::LocalWire;
use crate::outbox::Outbox;
use crate::wire::OutboundBody;
use crate::{Gateway, SUBPROTOCOL};

impl Gateway {
    /// Checks the request, upgrades it and spawns the connection actor.
    pub(crate) async fn upgrade(
        &self,
        req: HttpRequest,
        body: web::Payload,
    ) -> Result<HttpResponse, actix_web::Error> {
        let inner = &self.inner;
        let (principal, ip_slot) = match self.refuse(&req) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let reason = refusal
                    .extensions()
                    .get::<RefusalCode>()
                    .map_or("other", |code| code.0);
                inner.metrics.upgrade_rejected(reason);
                return Ok(*refusal);
            }
        };
        let budget = Rc::new(InboundBudget::default());
        let guarded = GuardedPayload::new(
            body.into_inner(),
            Rc::clone(&budget),
            inner.config.max_message_bytes,
        );
        let boxed: std::pin::Pin<
            Box<
                dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>,
            >,
        > = Box::pin(guarded);
        let mut payload = actix_web::dev::Payload::from(boxed);
        let body = web::Payload::from_request(&req, &mut payload).await?;
        // actix-ws parses the inbound side; its session is not used: the response body is ours.
        let (response, _session, stream) =
            actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL])?;
        let inbound = stream
            .max_frame_size(inner.config.max_message_bytes)
            .aggregate_continuations()
            .max_continuation_size(inner.config.max_message_bytes);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let services = matches!(inner.behaviour, Behaviour::Services { .. });
        // `?welcome=1`: announce the epoch first and hold pushes until the first message, so
        // a resume takes effect before any live event of the default channels.
        let welcome = services
            && req
                .query_string()
                .split('&')
                .any(|pair| pair == "welcome=1" || pair == "welcome=true");
        let subs = Subscriptions::new(inner.config.max_subscriptions);
        let outbox = Outbox::new(inner.config.event_buffer, &subs.list(), welcome)
            .with_ticker_window(
                i64::try_from(inner.config.ticker_window_ms * 1_000).unwrap_or(i64::MAX),
            );
        let port = Port::new(id, outbox);
        let fanout = match &inner.behaviour {
            Behaviour::Services { hub, .. } => Some(WorkerFanout::for_this_worker(
                inner.id,
                hub,
                &inner.metrics,
                &inner.shutdown,
            )),
            Behaviour::Echo => None,
        };
        // Echo mode has no fan-out task: its connection's counts are flushed when it ends.
        let local = fanout.as_ref().map_or_else(
            || Rc::new(LocalWire::new(&inner.metrics)),
            |fanout| Rc::clone(&fanout.wire),
        );
        let writer_port = Rc::clone(&port);
        let chunk_bytes = inner.config.write_buffer_bytes;
        let metrics = Arc::clone(&inner.metrics);
        let response = response
            .map_body(move |_, actix_body| {
                OutboundBody::new(writer_port, actix_body, metrics, local, chunk_bytes)
            })
            .map_into_boxed_body();
        // Before the response goes out: an event published once the client sees the upgrade
        // already reaches it.
        if let Some(fanout) = &fanout {
            fanout.add(&port);
        }
        let connection = Connection {
            id,
            port,
            fanout,
            inbound,
            budget,
            config: Arc::clone(&inner.config),
            behaviour: inner.behaviour.clone(),
            subs,
            principal,
            _ip_slot: ip_slot,
            last_seen: Instant::now(),
            metrics: Arc::clone(&inner.metrics),
            shutdown: inner.shutdown.clone(),
            _active: ActiveGuard::new(Arc::clone(&inner.active), Arc::clone(&inner.metrics)),
        };
        // No span around the actor: it would be entered on every poll; log lines carry `conn`.
        tracing::info!(conn = id, peer = %peer_text(&req), principal = %connection.principal.name, "websocket connection opened");
        // MessageStream is !Send: the actor stays on this worker's LocalSet.
        actix_web::rt::spawn(connection.run());
        Ok(response)
    }

    /// `POST` on the WebSocket path: the upgrade's checks without the upgrade, for browsers, which
    /// cannot read why an upgrade was refused but send their page's `Origin` with a `POST`. 204
    /// when an upgrade would be admitted now, else the upgrade's refusal (403
    /// `origin_not_allowed`, 401 `unauthorized`, 429 ...). It counts as a connection attempt for
    /// `ws.connect_rate_per_ip`, so it cannot be used to guess tokens faster.
    pub(crate) fn preflight(&self, req: &HttpRequest) -> HttpResponse {
        match self.refuse(req) {
            Ok(_admitted) => HttpResponse::NoContent().finish(),
            Err(refusal) => *refusal,
        }
    }

    /// Returns the caller, or the response refusing the upgrade. Checks run cheapest first; the
    /// attempt rate comes before authentication so that guessing tokens is rate limited too.
    fn refuse(&self, req: &HttpRequest) -> Result<(Principal, Option<IpSlot>), Box<HttpResponse>> {
        let config = &self.inner.config;
        let ip = client_ip(req, &config.trusted_proxies);
        let over_rate = self
            .inner
            .attempts
            .as_ref()
            .zip(ip)
            .and_then(|(limiter, ip)| limiter.check(ip).err());
        if let Some(wait) = over_rate {
            return Err(refusal(
                HttpResponse::TooManyRequests()
                    .insert_header((header::RETRY_AFTER, retry_after_secs(wait).to_string())),
                "rate_limited",
                "too many connection attempts from this address",
            ));
        }
        if self.open_connections() >= config.max_connections as u64 {
            return Err(refusal(
                HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, "5")),
                "too_many_connections",
                "too many connections",
            ));
        }
        if !origin_allowed(req, config) {
            return Err(refusal(
                &mut HttpResponse::Forbidden(),
                "origin_not_allowed",
                "origin not allowed",
            ));
        }
        subprotocol_offer_ok(req)?;
        let principal = config.auth.authenticate(req).map_err(|err| {
            tracing::info!(peer = %peer_text(req), %err, "websocket upgrade refused");
            refusal(
                HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, "Bearer")),
                "unauthorized",
                &err.to_string(),
            )
        })?;
        if !principal.can_read() {
            return Err(refusal(
                &mut HttpResponse::Forbidden(),
                "forbidden",
                "token lacks the read scope",
            ));
        }
        let slot = match ip {
            Some(ip) if config.max_connections_per_ip > 0 => Some(
                IpSlot::acquire(&self.inner.per_ip, ip, config.max_connections_per_ip).ok_or_else(
                    || {
                        refusal(
                            HttpResponse::TooManyRequests()
                                .insert_header((header::RETRY_AFTER, "5")),
                            "too_many_connections_from_address",
                            "too many connections from this address",
                        )
                    },
                )?,
            ),
            _ => None,
        };
        Ok((principal, slot))
    }
}

/// Refuses an upgrade that offers sub-protocols without [`SUBPROTOCOL`] (e.g. `bearer.<token>`
/// alone): the server could select none, which browsers and most clients treat as a failed
/// handshake after the upgrade, and selecting `bearer.<token>` would echo the token in a header.
/// 400 `subprotocol_required` says what to offer instead.
fn subprotocol_offer_ok(req: &HttpRequest) -> Result<(), Box<HttpResponse>> {
    let mut offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .peekable();
    if offered.peek().is_none() || offered.any(|name| name == SUBPROTOCOL) {
        return Ok(());
    }
    Err(refusal(
        &mut HttpResponse::BadRequest(),
        "subprotocol_required",
        "offer the sub-protocol cryptobot.v1 (together with bearer.<token> when the token goes there)",
    ))
}

/// The code of a refused upgrade, kept on its response for the `reason` label of
/// `cryptobot_ws_upgrades_rejected_total`.
#[derive(Debug, Clone, Copy)]
struct RefusalCode(&'static str);

/// A refused upgrade: the REST API's error body, `{"error": "..", "code": ".."}`.
fn refusal(
    response: &mut actix_web::HttpResponseBuilder,
    code: &'static str,
    message: &str,
) -> Box<HttpResponse> {
    let mut response = response.json(serde_json::json!({ "error": message, "code": code }));
    response.extensions_mut().insert(RefusalCode(code));
    Box::new(response)
}

/// Browsers always send `Origin`; other clients usually do not. Cross-site WebSocket hijacking is
/// prevented by accepting only the listed origins, or the page's own origin when none is listed.
fn origin_allowed(req: &HttpRequest, config: &GatewayConfig) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    (!host.is_empty() && origin_host.eq_ignore_ascii_case(host))
        || (config.allow_localhost_origins && is_localhost(origin_host))
        || config
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Whether `host[:port]` names the local machine: `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_localhost(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map_or("", |(inside, _)| inside)
    } else {
        host_port
            .split_once(':')
            .map_or(host_port, |(host, _)| host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The TCP peer for a log line: `127.0.0.1:60500`, or `-` when actix knows none (a test request).
fn peer_text(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "-".to_owned(), |addr| addr.to_string())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn origin_policy() {
        let request = |origin: Option<&str>| {
            let mut req = TestRequest::default().insert_header((header::HOST, "bot.example:8080"));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            req.to_http_request()
        };
        let config = |list: &[&str], localhost: bool| GatewayConfig {
            allowed_origins: list.iter().map(|o| (*o).to_owned()).collect(),
            allow_localhost_origins: localhost,
            ..GatewayConfig::default()
        };
        let defaults = GatewayConfig::default();
        let cases: [(&str, Option<&str>, GatewayConfig, bool); 14] = [
            // TC0: defaults: own origin, localhost pages and non-browser clients only
            (
                "same",
                Some("http://bot.example:8080"),
                defaults.clone(),
                true,
            ),
            (
                "same, other case",
                Some("http://BOT.example:8080"),
                defaults.clone(),
                true,
            ),
            (
                "cross",
                Some("https://evil.example"),
                defaults.clone(),
                false,
            ),
            (
                "same host, other port",
                Some("http://bot.example:9999"),
                defaults.clone(),
                false,
            ),
            ("no origin", None, defaults.clone(), true),
            (
                "localhost",
                Some("http://localhost:3000"),
                defaults.clone(),
                true,
            ),
            (
                "127.0.0.1",
                Some("http://127.0.0.1:5173"),
                defaults.clone(),
                true,
            ),
            ("[::1]", Some("http://[::1]:8000"), defaults.clone(), true),
            (
                "localhost lookalike",
                Some("http://localhost.evil.example"),
                defaults.clone(),
                false,
            ),
            ("null origin", Some("null"), defaults, false),
            // TC1: localhost off
            (
                "localhost off",
                Some("http://localhost:3000"),
                config(&[], false),
                false,
            ),
            // TC2: allow-list adds to the own origin
            (
                "listed",
                Some("https://evil.example"),
                config(&["https://evil.example"], false),
                true,
            ),
            (
                "same with a list",
                Some("http://bot.example:8080"),
                config(&["https://x.example"], false),
                true,
            ),
            // TC3: wildcard
            (
                "wildcard",
                Some("https://evil.example"),
                config(&["*"], false),
                true,
            ),
        ];
        for (name, origin, config, allowed) in cases {
            assert_eq!(origin_allowed(&request(origin), &config), allowed, "{name}");
        }
    }

    #[test]
    fn subprotocol_offers_must_include_cryptobot_v1() {
        let offer = |protocols: &[&str]| {
            let mut req = TestRequest::default();
            for protocol in protocols {
                req = req.append_header((header::SEC_WEBSOCKET_PROTOCOL, *protocol));
            }
            subprotocol_offer_ok(&req.to_http_request()).is_ok()
        };
        // TC0: nothing offered, or cryptobot.v1 among the offers (one header or several)
        assert!(offer(&[]));
        assert!(offer(&["cryptobot.v1"]));
        assert!(offer(&["bearer.abc, cryptobot.v1"]));
        assert!(offer(&["bearer.abc", "cryptobot.v1"]));
        // TC1: offers without it
        assert!(!offer(&["bearer.abc"]));
        assert!(!offer(&["graphql-ws"]));
        assert!(!offer(&["cryptobot.v2, bearer.abc"]));
    }
}
