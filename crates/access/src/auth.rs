//! Authentication shared by the WebSocket upgrade and the REST API: finds the bearer token of a
//! request and maps it to a [`Principal`] with scopes (docs/security.md).

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::RequestParts;

/// Scope that allows reading market data, the portfolio and trades.
pub const SCOPE_READ: &str = "read";
/// Scope that allows executing trades and changing positions.
pub const SCOPE_TRADE: &str = "trade";

/// One static token of `auth.mode = "token"`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticToken {
    /// Name used in logs instead of the token.
    pub name: String,
    /// The secret itself; never logged.
    pub token: String,
    /// Granted scopes (`read`, `trade`).
    pub scopes: Vec<String>,
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Who may connect, and with which scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Authenticator {
    /// No authentication: every request is the anonymous principal with every scope. Only safe
    /// on a loopback address (the server refuses other addresses unless told otherwise).
    #[default]
    None,
    /// Static tokens, compared in constant time.
    Tokens(Vec<StaticToken>),
    /// HS256 JSON Web Tokens signed with this secret; `exp` is required, `nbf` checked when
    /// present, no leeway; scopes in `scope` (space separated) or `scopes` (array).
    Jwt(JwtSecret),
}

/// The HS256 secret of [`Authenticator::Jwt`]; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(pub Vec<u8>);

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// The claims cryptobot reads from a JWT.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Subject: the principal's name.
    #[serde(default)]
    sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    exp: i64,
    /// Space-separated scopes (OAuth 2 style).
    #[serde(default)]
    scope: Option<String>,
    /// Scopes as an array.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (`anonymous` without authentication, the `sub` claim of a JWT); safe to
    /// log.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the credential expires (a JWT's `exp`, seconds since the Unix epoch); a WebSocket
    /// connection is closed then with 4401 `token expired`.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The caller of a server without authentication: every scope.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            scopes: vec![SCOPE_READ.to_owned(), SCOPE_TRADE.to_owned()],
            expires_at: None,
        }
    }

    /// True when the caller may read (`read`, or `trade` which implies it).
    #[must_use]
    pub fn can_read(&self) -> bool {
        self.has(SCOPE_READ) || self.has(SCOPE_TRADE)
    }

    /// True when the caller may trade and change positions.
    #[must_use]
    pub fn can_trade(&self) -> bool {
        self.has(SCOPE_TRADE)
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the header, the sub-protocol or the query.
    #[error("missing bearer token")]
    Missing,
    /// A token was given but matches none.
    #[error("invalid token")]
    Invalid,
}

impl Authenticator {
    /// True when requests must carry a token.
    #[must_use]
    pub const fn is_enabled(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Authenticates a request from its `Authorization: Bearer` header, its `bearer.<token>`
    /// WebSocket sub-protocol or its `token` query parameter; the first valid one wins.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without any token, [`AuthError::Invalid`] when none matches.
    pub fn authenticate(&self, req: &(impl RequestParts + ?Sized)) -> Result<Principal, AuthError> {
        if !self.is_enabled() {
            return Ok(Principal::anonymous());
        }
        let check = |candidate: &String| match self {
            Self::None => None,
            Self::Tokens(tokens) => Self::match_token(tokens, candidate),
            Self::Jwt(secret) => decode_jwt(&secret.0, candidate).ok(),
        };
        let candidates = candidate_tokens(req);
        if candidates.is_empty() {
            return Err(AuthError::Missing);
        }
        candidates.iter().find_map(check).ok_or(AuthError::Invalid)
    }

    /// Compares against every token (no early exit), so timing reveals neither which token nor
    /// how much of it matched.
    fn match_token(tokens: &[StaticToken], candidate: &str) -> Option<Principal> {
        let mut found = None;
        for entry in tokens {
            if constant_time_eq(candidate.as_bytes(), entry.token.as_bytes()) && found.is_none() {
                found = Some(Principal {
                    name: entry.name.clone(),
                    scopes: entry.scopes.clone(),
                    expires_at: None,
                });
            }
        }
        found
    }
}

/// Signs `claims` as an HS256 JWT with `secret`: what a token issuer for `auth.mode = "jwt"`
/// (and a test) writes.
///
/// # Errors
/// A `secret` HMAC cannot take (none: any length is a key), or claims that do not serialize.
pub fn encode_jwt(
    secret: &[u8],
    claims: &impl serde::Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    crate::hs256::install();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

/// Verifies an HS256 JWT: signature, `exp` (required) and `nbf` (when present), without leeway.
///
/// # Errors
/// The reason from `jsonwebtoken` (bad signature, expired, not yet valid, malformed).
pub fn decode_jwt(secret: &[u8], token: &str) -> Result<Principal, jsonwebtoken::errors::Error> {
    crate::hs256::install();
    let mut validation = Validation::new(Algorithm::HS256);
    // The default 60 s leeway would accept expired tokens for a minute.
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)?;
    let claims = data.claims;
    let mut scopes: Vec<String> = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    scopes.extend(claims.scopes.unwrap_or_default());
    Ok(Principal {
        name: claims.sub.unwrap_or_else(|| "jwt".to_owned()),
        scopes,
        expires_at: Some(claims.exp),
    })
}

/// Every token the request carries: `Authorization: Bearer`, `bearer.<token>` sub-protocol,
/// `?token=`.
fn candidate_tokens(req: &(impl RequestParts + ?Sized)) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(token) = req
        .header_values("authorization")
        .first()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim())
    {
        found.push(token.to_owned());
    }
    found.extend(
        req.header_values("sec-websocket-protocol")
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter_map(|p| p.strip_prefix("bearer."))
            .map(str::to_owned),
    );
    found.extend(
        req.query()
            .split('&')
            .filter_map(|pair| pair.strip_prefix("token="))
            .map(percent_decode),
    );
    found.retain(|t| !t.is_empty());
    found
}

/// Decodes `%XX` escapes and `+` of a query value; malformed escapes are kept as they are.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares two byte strings in time that depends only on their lengths, so timing does not
/// reveal how long a matching prefix is.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Walk the expected length even on a length mismatch, so the loop length is the same.
    for (i, y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TestRequest;

    fn bearer(value: &str) -> TestRequest {
        TestRequest::default().header("Authorization", format!("Bearer {value}"))
    }

    fn tokens() -> Authenticator {
        Authenticator::Tokens(vec![
            StaticToken {
                name: "reader".into(),
                token: "r3ad".into(),
                scopes: vec!["read".into()],
            },
            StaticToken {
                name: "trader".into(),
                token: "s3cret".into(),
                scopes: vec!["read".into(), "trade".into()],
            },
        ])
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            // TC0: equal
            (b"s3cret", b"s3cret", true),
            // TC1: last byte differs
            (b"s3creT", b"s3cret", false),
            // TC2: prefix of the expected
            (b"s3cre", b"s3cret", false),
            // TC3: longer than the expected
            (b"s3crett", b"s3cret", false),
            // TC4: empty against non-empty
            (b"", b"s3cret", false),
            // TC5: both empty
            (b"", b"", true),
        ];
        for (a, b, equal) in cases {
            assert_eq!(constant_time_eq(a, b), equal, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn tokens_are_found_in_header_subprotocol_and_query() {
        let auth = tokens();
        let cases = [
            // TC0: header
            (bearer("s3cret"), Ok("trader")),
            // TC1: sub-protocol, next to cryptobot.v1
            (
                TestRequest::default()
                    .header("Sec-WebSocket-Protocol", "cryptobot.v1, bearer.r3ad"),
                Ok("reader"),
            ),
            // TC2: query, percent-encoded
            (
                TestRequest {
                    query: "x=1&token=s3cre%74".to_owned(),
                    ..TestRequest::default()
                },
                Ok("trader"),
            ),
            // TC3: wrong token
            (
                TestRequest {
                    query: "token=s3cre".to_owned(),
                    ..TestRequest::default()
                },
                Err(AuthError::Invalid),
            ),
            // TC4: nothing
            (TestRequest::default(), Err(AuthError::Missing)),
        ];
        for (req, expected) in cases {
            let got = auth.authenticate(&req).map(|p| p.name);
            assert_eq!(got.as_deref().map_err(|e| *e), expected);
        }
    }

    #[test]
    fn scopes_decide_what_a_principal_may_do() {
        let auth = tokens();
        let reader = auth.authenticate(&bearer("r3ad")).unwrap();
        assert!(reader.can_read() && !reader.can_trade());
        let anonymous = Authenticator::None
            .authenticate(&TestRequest::default())
            .unwrap();
        assert!(anonymous.can_read() && anonymous.can_trade());
        assert!(
            !format!("{auth:?}").contains("s3cret"),
            "tokens are redacted"
        );
    }

    fn jwt(secret: &[u8], claims: &serde_json::Value) -> String {
        encode_jwt(secret, claims).unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn jwts_are_checked_for_signature_expiry_and_not_before() {
        let secret = b"an-hs256-secret-of-32-bytes-long";
        let t = now();
        let cases = [
            // TC0: valid, space-separated scopes
            (
                jwt(
                    secret,
                    &serde_json::json!({"sub":"alice","exp":t+60,"scope":"read trade"}),
                ),
                Ok(vec!["read", "trade"]),
            ),
            // TC1: scopes as an array, nbf in the past
            (
                jwt(
                    secret,
                    &serde_json::json!({"exp":t+60,"nbf":t-5,"scopes":["read"]}),
                ),
                Ok(vec!["read"]),
            ),
            // TC2: expired a second ago (no leeway)
            (
                jwt(secret, &serde_json::json!({"exp":t-1,"scope":"read"})),
                Err(()),
            ),
            // TC3: not valid yet
            (
                jwt(
                    secret,
                    &serde_json::json!({"exp":t+60,"nbf":t+30,"scope":"read"}),
                ),
                Err(()),
            ),
            // TC4: no exp
            (jwt(secret, &serde_json::json!({"scope":"read"})), Err(())),
            // TC5: another secret
            (
                jwt(
                    b"another-secret-another-secret-xx",
                    &serde_json::json!({"exp":t+60,"scope":"read"}),
                ),
                Err(()),
            ),
            // TC6: not a JWT
            ("not.a.jwt".to_owned(), Err(())),
        ];
        for (index, (token, expected)) in cases.into_iter().enumerate() {
            let got = decode_jwt(secret, &token).map(|p| p.scopes).map_err(drop);
            let expected = expected.map(|s| s.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, expected, "TC{index}");
        }
        // The principal carries the expiry and the subject.
        let token = jwt(
            secret,
            &serde_json::json!({"sub":"alice","exp":t+60,"scope":"read"}),
        );
        let auth = Authenticator::Jwt(JwtSecret(secret.to_vec()));
        let principal = auth.authenticate(&bearer(&token)).unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.expires_at),
            ("alice", Some(t + 60))
        );
        assert!(!format!("{auth:?}").contains("hs256"), "secret is redacted");
    }
}
