//! HTTP Basic authentication of the HTTP port against the users file
//! (`security.users_file`, docs/SECURITY.md "Clients").
//!
//! Every request carries its credentials (`Authorization: Basic base64(user:password)`):
//! nothing is remembered between requests. Without credentials, or with a wrong user or
//! password, the answer is `401` with `WWW-Authenticate: Basic realm="raftkv"`; an
//! authenticated user without the permission the route needs gets `403`. Open without
//! credentials: the dashboard page, `/version` and `/health` (no data), and `/metrics`
//! when `security.metrics_open` says so.
//!
//! Invariants: without a users file everything is allowed, as before; every refusal is
//! counted ([`HttpAccess::take_failures`]) and logged with the client's address, never
//! the password.

use std::sync::Arc;

use base64::Engine;
use log::warn;

use super::json;
use super::route::Route;
use crate::codec::http::{HttpRequest, HttpResponse};
use crate::security::{Permission, Users};

/// How a connection's requests are checked.
#[derive(Debug, Clone, Default)]
pub struct HttpAccess {
    /// `None`: no users file, everything allowed.
    users: Option<Arc<Users>>,
    /// `/metrics` needs no credentials.
    metrics_open: bool,
    /// The client's address, for the log.
    addr: String,
    failures: u64,
}

/// The permission `route` needs (`None`: open to anyone).
pub fn required(route: &Route, metrics_open: bool) -> Option<Permission> {
    match route {
        Route::Dashboard | Route::Version | Route::Health | Route::Refuse(_) => None,
        Route::Metrics if metrics_open => None,
        Route::Metrics | Route::ClusterStatus | Route::Events | Route::Get { .. } => {
            Some(Permission::Read)
        }
        Route::Put { .. } | Route::Delete { .. } | Route::Txn(_) => Some(Permission::Write),
    }
}

fn unauthorized(message: &str) -> HttpResponse {
    HttpResponse::json(401, json::error_body(message)).with_header(
        "WWW-Authenticate",
        "Basic realm=\"raftkv\", charset=\"UTF-8\"".into(),
    )
}

/// The user and password of a `Basic` `Authorization` header value.
fn basic_credentials(value: &str) -> Option<(String, Vec<u8>)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl HttpAccess {
    /// Requests of the client at `addr` are checked against `users`.
    pub fn checked(users: Arc<Users>, metrics_open: bool, addr: String) -> HttpAccess {
        HttpAccess {
            users: Some(users),
            metrics_open,
            addr,
            failures: 0,
        }
    }

    /// The refusal of `request` for `route`, if it may not run.
    pub fn check(&mut self, request: &HttpRequest, route: &Route) -> Option<HttpResponse> {
        let users = self.users.as_ref()?;
        let needed = required(route, self.metrics_open)?;
        let addr = &self.addr;
        let path = &request.path;
        let Some(header) = request.authorization.as_deref() else {
            self.failures += 1;
            warn!("http client {addr}: {path} without credentials refused (401)");
            return Some(unauthorized("authentication required"));
        };
        let Some(granted) =
            basic_credentials(header).and_then(|(user, pass)| users.authenticate(&user, &pass))
        else {
            self.failures += 1;
            warn!("http client {addr}: {path} with a wrong user or password refused (401)");
            return Some(unauthorized(
                "invalid username-password pair or user is disabled",
            ));
        };
        if granted.allows(needed) {
            return None;
        }
        self.failures += 1;
        warn!("http client {addr}: {path} refused, the user lacks {needed:?} (403)");
        Some(HttpResponse::json(
            403,
            json::error_body(&format!("this user has no {needed:?} permission")),
        ))
    }

    /// The refusals counted since the last call.
    pub fn take_failures(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::users::password_hash_hex;

    fn request(path: &str, method: &str, authorization: Option<&str>) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            query: None,
            content_type: None,
            keep_alive: true,
            body: Vec::new(),
            authorization: authorization.map(str::to_string),
        }
    }

    fn basic(user: &str, pass: &str) -> String {
        let text = format!("{user}:{pass}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }

    /// Goal: open routes stay open, others need credentials and the right permission.
    #[test]
    fn routes_need_their_permission() {
        let text = format!("user reader on #{} read\n", password_hash_hex(b"rpw"));
        let users = Arc::new(Users::parse(&text).unwrap());
        let mut access = HttpAccess::checked(users, false, "a".into());
        let reader = basic("reader", "rpw");
        let wrong = basic("reader", "bad");
        let get = Route::Get {
            key: b"k".to_vec(),
            stale: false,
        };
        let put = Route::Put {
            key: b"k".to_vec(),
            value: Vec::new(),
        };
        let cases: [(&Route, Option<&str>, Option<u16>); 7] = [
            (&Route::Health, None, None),
            (&Route::Version, None, None),
            (&Route::Metrics, None, Some(401)),
            (&get, None, Some(401)),
            (&get, Some(&wrong), Some(401)),
            (&get, Some(&reader), None),
            (&put, Some(&reader), Some(403)),
        ];
        for (i, (route, auth, want)) in cases.into_iter().enumerate() {
            let got = access.check(&request("/x", "GET", auth), route);
            assert_eq!(got.as_ref().map(|r| r.status), want, "#{i}");
            if let Some(response) = got.filter(|r| r.status == 401) {
                assert!(
                    response
                        .headers
                        .iter()
                        .any(|(name, _)| *name == "WWW-Authenticate"),
                    "#{i}: no WWW-Authenticate"
                );
            }
        }
        assert_eq!(access.take_failures(), 4);
        let mut open = HttpAccess::checked(Arc::new(Users::parse("").unwrap()), true, "a".into());
        assert!(
            open.check(&request("/metrics", "GET", None), &Route::Metrics)
                .is_none()
        );
    }

    #[test]
    fn basic_credentials_parse() {
        assert_eq!(
            basic_credentials(&basic("u", "p:q")),
            Some(("u".into(), b"p:q".to_vec()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }
}
