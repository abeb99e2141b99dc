//! REST routes under `/api/v1`, mounted by one function so `main` and tests share the wiring.

use std::sync::Arc;

use actix_web::ResponseError;
use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{Next, from_fn};
use actix_web::web;
use cryptobot_access::Authenticator;

use crate::auth::require_auth;
use crate::error::ApiError;
use crate::rate_limit::{RestRateLimit, limit_rest_rate};

mod controls;
mod dashboard;
mod health;
mod market;
/// The OpenAPI document, derived from the handlers and types.
pub mod openapi;
mod orders;
mod performance;
mod responses;
mod schemas;
mod support;
mod trading;

/// Largest accepted JSON request body, in bytes.
pub const MAX_JSON_BODY: usize = 16 * 1024;

/// What guards the REST routes: the per-address rate, then authentication. The routes are built
/// with it rather than finding it in the app data, so an app cannot mount them unguarded.
#[derive(Debug, Clone)]
pub struct RestAccess {
    authenticator: Arc<Authenticator>,
    rate: Arc<RestRateLimit>,
}

impl RestAccess {
    /// The guards: `authenticator` (the WebSocket upgrade's too) and the REST rate.
    #[must_use]
    pub fn new(authenticator: Arc<Authenticator>, rate: RestRateLimit) -> Self {
        Self {
            authenticator,
            rate: Arc::new(rate),
        }
    }
}

/// What wraps a route: the public probes and the document are only rate limited, `/metrics`
/// and the `/api/v1` scope need a token when `auth.mode` is not `none` (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Liveness probes carry no token; clients sync clocks and read the document before they
    /// have one.
    Public,
    /// `/metrics`: outside `/api/v1`, behind the token.
    Metrics,
    /// Under `/api/v1`, behind the token.
    Api,
}

/// One REST route: who may call it, its full path, its method and its handler. [`configure`]
/// mounts exactly these, and a test holds them to the OpenAPI document both ways.
struct ApiRoute {
    access: Access,
    path: &'static str,
    method: Method,
    handler: fn(actix_web::Route) -> actix_web::Route,
}

/// Every REST route, in mounting order (`/orders/by-client-id/..` before `/orders/{id}`).
fn api_routes() -> [ApiRoute; 26] {
    let route = |access, path, method, handler| ApiRoute {
        access,
        path,
        method,
        handler,
    };
    use Access::{Api, Metrics, Public};
    [
        route(Public, "/api/v1/health", Method::GET, |r| {
            r.to(health::health)
        }),
        route(Public, "/api/v1/time", Method::GET, |r| r.to(health::time)),
        route(Public, "/livez", Method::GET, |r| r.to(health::livez)),
        route(Public, "/livez", Method::HEAD, |r| r.to(health::livez)),
        route(Public, "/readyz", Method::GET, |r| r.to(health::readyz)),
        route(Public, "/readyz", Method::HEAD, |r| r.to(health::readyz)),
        route(Public, "/api/v1/openapi.json", Method::GET, |r| {
            r.to(openapi::serve)
        }),
        route(Metrics, "/metrics", Method::GET, |r| r.to(health::metrics)),
        route(Api, "/api/v1/tickers", Method::GET, |r| {
            r.to(market::tickers)
        }),
        route(Api, "/api/v1/tickers/{symbol}", Method::GET, |r| {
            r.to(market::ticker)
        }),
        route(Api, "/api/v1/candles/{symbol}", Method::GET, |r| {
            r.to(market::candles)
        }),
        route(Api, "/api/v1/portfolio", Method::GET, |r| {
            r.to(trading::portfolio)
        }),
        route(Api, "/api/v1/trades", Method::GET, |r| {
            r.to(trading::trades)
        }),
        route(Api, "/api/v1/trades", Method::POST, |r| {
            r.to(trading::create_trade)
        }),
        route(Api, "/api/v1/performance", Method::GET, |r| {
            r.to(performance::performance)
        }),
        route(Api, "/api/v1/profit/daily", Method::GET, |r| {
            r.to(performance::daily)
        }),
        route(Api, "/api/v1/positions/{symbol}", Method::PATCH, |r| {
            r.to(trading::update_position)
        }),
        route(Api, "/api/v1/positions/{symbol}/exit", Method::POST, |r| {
            r.to(controls::force_exit)
        }),
        route(Api, "/api/v1/bot", Method::GET, |r| r.to(controls::state)),
        route(Api, "/api/v1/bot/pause", Method::POST, |r| {
            r.to(controls::pause)
        }),
        route(Api, "/api/v1/bot/resume", Method::POST, |r| {
            r.to(controls::resume)
        }),
        route(Api, "/api/v1/orders", Method::GET, |r| r.to(orders::list)),
        route(Api, "/api/v1/orders", Method::POST, |r| r.to(orders::place)),
        route(Api, "/api/v1/orders", Method::DELETE, |r| {
            r.to(orders::cancel_all)
        }),
        route(
            Api,
            "/api/v1/orders/by-client-id/{client_order_id}",
            Method::DELETE,
            |r| r.to(orders::cancel_by_client_id),
        ),
        route(Api, "/api/v1/orders/{id}", Method::DELETE, |r| {
            r.to(orders::cancel)
        }),
    ]
}

/// `(METHOD, path)` of every route [`configure`] mounts besides the dashboard (`/`,
/// `/assets/*`: HTML, not API); the WebSocket endpoint is the gateway's
/// (`cryptobot_ws_gateway::Gateway::configure`).
#[must_use]
pub fn mounted_routes() -> Vec<(String, String)> {
    api_routes()
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_owned()))
        .collect()
}

/// One resource per path with every method of the table on it: a method a resource does not
/// take is then 405, not a fall-through to 404.
fn resource(path: &str, scope_prefix: &str, routes: &[ApiRoute]) -> actix_web::Resource {
    let relative = path.strip_prefix(scope_prefix).unwrap_or(path);
    routes
        .iter()
        .filter(|route| route.path == path)
        .fold(web::resource(relative), |resource, route| {
            resource.route((route.handler)(web::method(route.method.clone())))
        })
}

/// Mounts the REST API behind `access`, its extractor error handlers and the JSON 404 fallback.
pub fn configure(cfg: &mut web::ServiceConfig, access: &RestAccess) {
    let (rate, auth) = (&access.rate, &access.authenticator);
    cfg.app_data(json_config())
        .app_data(query_config())
        .app_data(path_config())
        .configure(dashboard::configure);
    let routes = api_routes();
    let mut paths: Vec<(Access, &str)> = Vec::new();
    for route in &routes {
        if !paths.iter().any(|(_, path)| *path == route.path) {
            paths.push((route.access, route.path));
        }
    }
    // The rate limit wraps authentication (the last `wrap` runs first), so guessing tokens is
    // limited too; health probes are limited like everything else.
    let mut api = web::scope("/api/v1")
        .wrap(from_fn(require_auth(Arc::clone(auth))))
        .wrap(from_fn(limit_rest_rate(Arc::clone(rate))));
    for (access, path) in paths {
        match access {
            Access::Public => {
                cfg.service(
                    resource(path, "", &routes).wrap(from_fn(limit_rest_rate(Arc::clone(rate)))),
                );
            }
            Access::Metrics => {
                cfg.service(
                    resource(path, "", &routes)
                        .wrap(from_fn(require_auth(Arc::clone(auth))))
                        .wrap(from_fn(limit_rest_rate(Arc::clone(rate)))),
                );
            }
            Access::Api => api = api.service(resource(path, "/api/v1", &routes)),
        }
    }
    cfg.service(api);
}

pub use openapi::OPENAPI;

/// The methods a path takes, for the `Allow` header of a 405 (RFC 9110 requires it), read from
/// [`OPENAPI`]: the document lists every route (a test holds it to docs/api.md and the server).
fn allowed_methods(path: &str) -> Option<String> {
    static TABLE: std::sync::LazyLock<Vec<(Vec<String>, String)>> =
        std::sync::LazyLock::new(|| {
            let spec: serde_json::Value = serde_json::from_str(&OPENAPI).unwrap_or_default();
            spec["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(template, item)| {
                    let segments = template.split('/').map(str::to_owned).collect();
                    let methods: Vec<String> = item
                        .as_object()
                        .into_iter()
                        .flat_map(|ops| ops.keys())
                        .map(|method| method.to_ascii_uppercase())
                        .collect();
                    (segments, methods.join(", "))
                })
                .collect()
        });
    let segments: Vec<&str> = path.split('/').collect();
    TABLE
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(expected, actual)| {
                    expected == actual || (expected.starts_with('{') && !actual.is_empty())
                })
        })
        .map(|(_, methods)| methods.clone())
}

/// The answer for every path no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Gives the bodiless answers actix-web writes itself the API's `{"error", "code"}` body: a 405
/// for a method a route does not take (with `Allow`), and the 400 / 426 with which actix-ws
/// refuses a request to the WebSocket endpoint that is not a handshake (`invalid_upgrade`). Wraps
/// the whole app, so the WebSocket route is covered too.
///
/// # Errors
/// Only those of the wrapped service.
pub async fn json_bodiless_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let bodiless = matches!(
        response.response().body().size(),
        BodySize::None | BodySize::Sized(0)
    );
    let status = response.status();
    let upgrade = matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::UPGRADE_REQUIRED
    );
    if !bodiless || !(status == StatusCode::METHOD_NOT_ALLOWED || upgrade) {
        return Ok(response.map_into_left_body());
    }
    let (req, original) = response.into_parts();
    let mut json = if upgrade {
        let reason = original.head().reason().to_owned();
        ApiError::InvalidUpgrade { status, reason }.error_response()
    } else {
        ApiError::MethodNotAllowed.error_response()
    };
    if let Some(allow) = allowed_methods(req.path())
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow)
    {
        json.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    // Keep what middleware inside added (the RateLimit-* headers).
    for (name, value) in original.headers() {
        if name.as_str().starts_with("ratelimit-") {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, json).map_into_right_body())
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_JSON_BODY)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge {
                    limit: MAX_JSON_BODY,
                },
                E::ContentType => ApiError::UnsupportedMediaType,
                E::Deserialize(inner) if inner.is_data() => ApiError::BadRequest {
                    code: "invalid_payload",
                    message: inner.to_string(),
                },
                _ => ApiError::BadRequest {
                    code: "invalid_json",
                    message: format!("request body is not valid JSON: {err}"),
                },
            };
            api.into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::BadRequest {
            code: "invalid_query",
            message: err.to_string(),
        }
        .into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        ApiError::BadRequest {
            code: "invalid_path",
            message: err.to_string(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};
    use cryptobot_access::StaticToken;

    use super::*;

    fn access(per_sec: u32) -> RestAccess {
        let authenticator = Authenticator::Tokens(vec![StaticToken {
            name: "reader".to_owned(),
            token: "r3ad".to_owned(),
            scopes: vec!["read".to_owned()],
        }]);
        RestAccess::new(
            Arc::new(authenticator),
            RestRateLimit::new(per_sec, 1, Vec::new()),
        )
    }

    #[actix_web::test]
    async fn the_document_has_every_mounted_route_and_nothing_else() {
        let doc = openapi::document();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(|method| (method.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut mounted = mounted_routes();
        // Mounted by the gateway crate (served, tests/integration/openapi.rs).
        mounted.push(("GET".into(), "/api/v1/ws".into()));
        mounted.push(("POST".into(), "/api/v1/ws".into()));
        mounted.sort();
        assert_eq!(documented, mounted);
        // Every operation answers its errors with the one error body.
        for (name, response) in doc["components"]["responses"].as_object().unwrap() {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{name}"
            );
        }
    }

    #[actix_web::test]
    async fn routes_are_guarded_by_what_they_were_built_with_not_by_app_data() {
        // No Authenticator in the app data: the routes still check the one they hold.
        let access = access(0);
        let app = test::init_service(App::new().configure(|cfg| configure(cfg, &access))).await;
        let cases = [
            // TC0: no token
            ("GET", "/api/v1/portfolio", None, 401, "unauthorized"),
            ("GET", "/metrics", None, 401, "unauthorized"),
            // TC1: a wrong token
            ("GET", "/api/v1/tickers", Some("nope"), 401, "unauthorized"),
            // TC2: a read token on a method that trades
            ("POST", "/api/v1/trades", Some("r3ad"), 403, "forbidden"),
        ];
        for (method, path, token, status, code) in cases {
            let mut req = test::TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path);
            if let Some(token) = token {
                req = req.insert_header(("Authorization", format!("Bearer {token}")));
            }
            let res = test::call_service(&app, req.to_request()).await;
            assert_eq!(res.status().as_u16(), status, "{method} {path}");
            let body: serde_json::Value = test::read_body_json(res).await;
            assert_eq!(body["code"], code, "{method} {path}");
        }
        // TC3: public routes need no token
        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/api/v1/time").to_request(),
        )
        .await;
        assert_eq!(res.status().as_u16(), 200);
    }

    #[actix_web::test]
    async fn the_rest_rate_is_the_one_the_routes_were_built_with() {
        let access = access(1);
        let app = test::init_service(App::new().configure(|cfg| configure(cfg, &access))).await;
        let request = || {
            test::TestRequest::get()
                .uri("/api/v1/time")
                .peer_addr("192.0.2.9:5000".parse().unwrap())
                .to_request()
        };
        // TC0: the burst of one passes and is announced
        let first = test::call_service(&app, request()).await;
        assert_eq!(first.status().as_u16(), 200);
        assert_eq!(first.headers().get("ratelimit-limit").unwrap(), "1");
        assert_eq!(first.headers().get("ratelimit-remaining").unwrap(), "0");
        // TC1: the next one at once is refused with a wait
        let second = test::call_service(&app, request()).await;
        assert_eq!(second.status().as_u16(), 429);
        assert_eq!(second.headers().get("retry-after").unwrap(), "1");
    }
}
