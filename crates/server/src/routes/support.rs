//! What several handlers share: the check that a symbol is traded, the status of an idempotent
//! command, and a page of a history with the link to the next one.

use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder};
use cryptobot_domain::Symbol;
use cryptobot_services::ServiceError;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// Refuses a valid symbol the market does not trade (404 `unknown_symbol`, as
/// `GET /tickers/{symbol}` answers), so no handler asks the engine about it.
pub(super) fn ensure_traded(state: &AppState, symbol: &Symbol) -> Result<(), ApiError> {
    if state.market.symbols().contains(symbol) {
        Ok(())
    } else {
        Err(ServiceError::UnknownSymbol(symbol.clone()).into())
    }
}

/// 201 for a command carried out now, 200 for one that repeats an earlier `client_order_id`.
pub(super) fn command_status(replayed: bool) -> HttpResponseBuilder {
    if replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
}

/// One page as a JSON array, with `Link: <...>; rel="next"` (RFC 8288) to the page after its last
/// item when `more` match.
pub(super) fn page<T: Serialize>(
    items: &[T],
    more: bool,
    next_url: impl FnOnce(&T) -> String,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if more && let Some(last) = items.last() {
        response.insert_header((header::LINK, format!("<{}>; rel=\"next\"", next_url(last))));
    }
    response.json(items)
}

/// The cursor of a page query: its size and the ids it pages between.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor {
    pub(super) limit: usize,
    pub(super) before_id: Option<u64>,
    pub(super) after_id: Option<u64>,
}

impl Cursor {
    /// The URL of the page after one that ended with `last_id`: `path` with `limit`, the
    /// `filters` (`key=value`, URL-safe as written) and the cursor moved past `last_id` in the
    /// page's order (oldest first with `after_id`, else newest first), the other bound kept.
    pub(super) fn next_url(self, path: &str, filters: Vec<String>, last_id: u64) -> String {
        let (before_id, after_id) = if self.after_id.is_some() {
            (self.before_id, Some(last_id))
        } else {
            (Some(last_id), self.after_id)
        };
        let mut pairs = vec![format!("limit={}", self.limit)];
        pairs.extend(filters);
        pairs.extend(before_id.map(|id| format!("before_id={id}")));
        pairs.extend(after_id.map(|id| format!("after_id={id}")));
        format!("{path}?{}", pairs.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_moves_the_cursor_past_the_last_id_in_the_page_order() {
        let cursor = |before_id, after_id| Cursor {
            limit: 2,
            before_id,
            after_id,
        };
        let filters = || vec!["symbol=BTCUSDT".to_owned()];
        let cases = [
            // TC0: newest first: the next page is before the last id
            (cursor(None, None), "/x?limit=2&symbol=BTCUSDT&before_id=7"),
            // TC1: newest first below a bound: the bound moves
            (
                cursor(Some(9), None),
                "/x?limit=2&symbol=BTCUSDT&before_id=7",
            ),
            // TC2: oldest first: the next page is after the last id, the upper bound kept
            (
                cursor(Some(20), Some(3)),
                "/x?limit=2&symbol=BTCUSDT&before_id=20&after_id=7",
            ),
        ];
        for (cursor, expected) in cases {
            assert_eq!(cursor.next_url("/x", filters(), 7), expected, "{cursor:?}");
        }
    }
}
