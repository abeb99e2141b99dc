//! The error responses of the REST API: each refusal once, as an OpenAPI response component with
//! its status, and the sets of them that routes share, so an annotation lists `Guarded, Backend`
//! instead of six statuses. A leaf: it knows no handler.

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr};
use utoipa::{IntoResponses, ToResponse, ToSchema};

/// The `{"error", "code"}` body of every refusal.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code, reason = "a schema only: error.rs writes the body")]
pub(super) struct ErrorBody {
    error: String,
    #[schema(pattern = "^[a-z_]+$")]
    code: String,
}

/// Declares the error responses: each a status, a description, optional headers and the error
/// body. Each is a component (`ToResponse`) and, listed in `responses(..)`, its status with a
/// reference to that component (`IntoResponses`).
macro_rules! error_responses {
    ($($name:ident $status:literal: $description:literal $(, $header:literal)?;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` response (", $status, "): ", $description, ".")]
        pub(super) struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_response($description, &[$($header)?]).into())
            }
        }

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([(
                    $status.to_owned(),
                    Ref::from_response_name(stringify!($name)).into(),
                )])
            }
        }
    )*};
}

error_responses! {
    BadRequest "400": "invalid_json, invalid_payload, invalid_query, invalid_decimal, invalid_limit, invalid_path, invalid_symbol, invalid_client_order_id, invalid_upgrade (GET /api/v1/ws without the upgrade headers), subprotocol_required";
    Unauthorized "401": "unauthorized: a token is missing or invalid", "WWW-Authenticate";
    Forbidden "403": "forbidden: the token lacks the scope";
    NotFound "404": "unknown_symbol, no_position, unknown_order, not_found";
    Conflict "409": "duplicate_client_order_id, order_not_open, post_only_would_cross, too_many_orders";
    PayloadTooLarge "413": "payload_too_large: body over 16 KiB";
    UnsupportedMediaType "415": "unsupported_media_type: body not application/json";
    Unprocessable "422": "invalid_size, invalid_levels, invalid_order, order_too_small, insufficient_funds, insufficient_position";
    RateLimited "429": "rate_limited", "Retry-After";
    ServerError "500": "storage_error, internal";
    Unavailable "503": "no_price, unavailable, engine_fenced, too_many_connections";
    UpgradeRequired "426": "invalid_upgrade: a WebSocket version other than 13";
}

fn error_response(description: &str, headers: &[&str]) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    for name in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .build(),
        );
    }
    response.build()
}

/// Declares a set of error responses: the union of its members' `IntoResponses`.
macro_rules! response_sets {
    ($($(#[$doc:meta])* $name:ident: $($member:ident),+;)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                let mut responses = BTreeMap::new();
                $(responses.extend($member::responses());)+
                responses
            }
        }
    )*};
}

response_sets! {
    /// What every route behind the token may answer: no or a bad token, a missing scope, the rate.
    Guarded: Unauthorized, Forbidden, RateLimited;
    /// What a route that reaches the engine or its storage may answer besides.
    Backend: ServerError, Unavailable;
    /// What a route that reads a JSON body may answer besides: malformed, too large, not JSON,
    /// well-formed but refused.
    JsonBody: BadRequest, PayloadTooLarge, UnsupportedMediaType, Unprocessable;
    /// How `GET /api/v1/ws` refuses a request it does not upgrade.
    WebSocketRefusals: BadRequest, Unauthorized, Forbidden, RateLimited, Unavailable, UpgradeRequired;
}
