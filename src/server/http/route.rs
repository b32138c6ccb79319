//! Routing: an HTTP request becomes the [`Route`] it asks for, or the error response
//! that refuses it (400 bad input, 404 unknown path, 405 wrong method).
//!
//! Invariant: routing is pure and total: every request maps to exactly one route, and
//! a key is the percent-decoded bytes of the path after `/kv/` (so `/` and any byte can
//! be in a key when encoded); an empty key is refused.

use percent_encoding::percent_decode_str;

use super::json::{self, TxnSpec};
use crate::codec::http::{HttpRequest, HttpResponse};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the dashboard page.
    Dashboard,
    /// `GET /version`.
    Version,
    /// `GET /health`.
    Health,
    /// `GET /cluster/status`.
    ClusterStatus,
    /// `GET /metrics`: this node's metrics in the Prometheus text format.
    Metrics,
    /// `GET /events`: this node's recent events.
    Events,
    /// `GET /kv/{key}`; `stale`: `?stale=true`, a local read.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Serve from this node's applied state.
        stale: bool,
    },
    /// `PUT /kv/{key}`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// `DELETE /kv/{key}`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// `POST /txn`.
    Txn(TxnSpec),
    /// Refused: answer this.
    Refuse(HttpResponse),
}

fn refuse(status: u16, message: &str) -> Route {
    Route::Refuse(HttpResponse::json(status, json::error_body(message)))
}

fn wrong_method(allow: &'static str) -> Route {
    let response = HttpResponse::json(405, json::error_body(&format!("use {allow}")));
    Route::Refuse(response.with_header("Allow", allow.into()))
}

/// Whether the query string turns on `name` (`name`, `name=true` or `name=1`).
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, String> {
    let Some(query) = query else {
        return Ok(false);
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key == name {
            return match value {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(format!("`{name}` must be true or false, not {other:?}")),
            };
        }
    }
    Ok(false)
}

/// The route of `request`.
pub fn route(request: &HttpRequest) -> Route {
    let method = request.method.as_str();
    let path = request.path.as_str();
    if let Some(encoded) = path.strip_prefix("/kv/") {
        let key: Vec<u8> = percent_decode_str(encoded).collect();
        if key.is_empty() {
            return refuse(400, "empty key");
        }
        return kv_route(request, key);
    }
    match (path, method) {
        ("/" | "/index.html", "GET") => Route::Dashboard,
        ("/version", "GET") => Route::Version,
        ("/health", "GET") => Route::Health,
        ("/cluster/status", "GET") => Route::ClusterStatus,
        ("/metrics", "GET") => Route::Metrics,
        ("/events", "GET") => Route::Events,
        ("/txn", "POST") => match json::txn(&request.body) {
            Ok(spec) => Route::Txn(spec),
            Err(message) => refuse(400, &message),
        },
        (
            "/" | "/index.html" | "/version" | "/health" | "/cluster/status" | "/metrics"
            | "/events",
            _,
        ) => wrong_method("GET"),
        ("/txn", _) => wrong_method("POST"),
        _ => refuse(404, &format!("no such path {path:?}; see docs/HTTP.md")),
    }
}

fn kv_route(request: &HttpRequest, key: Vec<u8>) -> Route {
    match request.method.as_str() {
        "GET" => match query_flag(request.query.as_deref(), "stale") {
            Ok(stale) => Route::Get { key, stale },
            Err(message) => refuse(400, &message),
        },
        "PUT" => {
            let raw = request.content_type.as_deref() == Some("application/octet-stream");
            if raw {
                return Route::Put {
                    key,
                    value: request.body.clone(),
                };
            }
            match json::put_value(&request.body) {
                Ok(value) => Route::Put { key, value },
                Err(message) => refuse(
                    400,
                    &format!(
                        "{message} (send {{\"value\": \"...\"}}, or the raw value with \
                         Content-Type: application/octet-stream)"
                    ),
                ),
            }
        }
        "DELETE" => Route::Delete { key },
        _ => wrong_method("GET, PUT, DELETE"),
    }
}

#[cfg(test)]
mod tests {
    //! Goal: each method and path reaches its route, keys are percent-decoded, and
    //! everything else is refused with the right status.
    use super::*;

    fn request(method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> Route {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        route(&HttpRequest {
            method: method.into(),
            path,
            query,
            content_type: content_type.map(str::to_string),
            keep_alive: true,
            body: body.to_vec(),
            authorization: None,
        })
    }

    fn status(route: &Route) -> u16 {
        match route {
            Route::Refuse(response) => response.status,
            _ => 200,
        }
    }

    /// Method, target, content type, body, the status wanted.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);

    #[test]
    fn routes_and_refusals() {
        let cases: [Case; 12] = [
            ("GET", "/", None, b"", 200),
            ("GET", "/version", None, b"", 200),
            ("POST", "/version", None, b"", 405),
            ("GET", "/nope", None, b"", 404),
            ("GET", "/kv/", None, b"", 400),
            ("GET", "/kv/a?stale=maybe", None, b"", 400),
            ("PUT", "/kv/a", None, b"{\"value\": \"x\"}", 200),
            ("PUT", "/kv/a", None, b"x", 400),
            ("PUT", "/kv/a", Some("application/octet-stream"), b"x", 200),
            ("PATCH", "/kv/a", None, b"", 405),
            ("POST", "/txn", None, b"{}", 200),
            ("POST", "/txn", None, b"{", 400),
        ];
        for (i, (method, target, content_type, body, want)) in cases.iter().enumerate() {
            let got = request(method, target, *content_type, body);
            assert_eq!(status(&got), *want, "#{i}: {got:?}");
        }
    }

    #[test]
    fn keys_are_percent_decoded() {
        let got = request("GET", "/kv/a%2Fb%20c%FF?stale=true", None, b"");
        assert_eq!(
            got,
            Route::Get {
                key: b"a/b c\xff".to_vec(),
                stale: true
            }
        );
        let raw = request(
            "PUT",
            "/kv/k",
            Some("application/octet-stream"),
            b"\x00\x01",
        );
        assert_eq!(
            raw,
            Route::Put {
                key: b"k".to_vec(),
                value: vec![0, 1]
            }
        );
    }
}
