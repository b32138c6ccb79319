//! HttpCodec: HTTP/1.1 requests and responses, the first layer of the HTTP chain
//! (bytes <-> requests), followed by `server::http` (requests <-> kv requests).
//!
//! A request is a head parsed by `httparse` plus a body of exactly `Content-Length`
//! bytes; a response is a status line, a few fixed headers and a body with its
//! `Content-Length`, so a keep-alive client always knows where one ends. Chunked request
//! bodies are refused (every HTTP client sends `Content-Length` for a known body).
//!
//! Invariant: decoding never panics and never holds more than `head_bytes_max` bytes of
//! head or `body_bytes_max` bytes of body for one request: a head over its limit is
//! [`HttpError::HeadTooLarge`] (431), a body over its limit [`HttpError::BodyTooLarge`]
//! (413), anything unparsable [`HttpError::Malformed`] (400); after each the caller
//! answers and closes, as the rest of the input can no longer be framed.

/// Headers of one request at most (more: 431).
const HEADERS_MAX: usize = 64;

/// A decoded request. Header names are matched case-insensitively; only the ones the
/// API uses are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `PUT`, ... as sent.
    pub method: String,
    /// The path, percent-encoded as sent, without the query.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// `Content-Type`, lowercased, without parameters (`application/json`).
    pub content_type: Option<String>,
    /// The client wants the connection kept open after this request (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// The `Authorization` header, as sent (checked by the HTTP port's auth).
    pub authorization: Option<String>,
}

/// Why a request cannot be decoded; the connection is answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line and headers exceed the head limit, or there are too many headers.
    #[error("request head larger than {0} bytes or with too many headers")]
    HeadTooLarge(usize),
    /// `Content-Length` exceeds the body limit.
    #[error("request body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Not HTTP/1.x, or a header the codec cannot frame by.
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl HttpError {
    /// The status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge(_) => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::Malformed(_) => 400,
        }
    }
}

/// What [`HttpCodec::decode`] found at the start of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole request, which used this many input bytes.
    Request(usize, Box<HttpRequest>),
    /// Not a whole request yet. `expects_continue`: its head is complete and asks for
    /// `100 Continue` before the client sends the body.
    Partial {
        /// The head asked `Expect: 100-continue`.
        expects_continue: bool,
    },
}

/// The HTTP request decoder with its limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpCodec {
    head_bytes_max: usize,
    body_bytes_max: usize,
}

struct Head {
    len: usize,
    request: HttpRequest,
    content_length: u64,
    expects_continue: bool,
}

impl HttpCodec {
    /// A codec refusing heads over `head_bytes_max` and bodies over `body_bytes_max`.
    pub fn new(head_bytes_max: usize, body_bytes_max: usize) -> HttpCodec {
        HttpCodec {
            head_bytes_max,
            body_bytes_max,
        }
    }

    /// Decodes the request at the start of `input`.
    ///
    /// # Errors
    /// [`HttpError`] when the input is not a request within the limits.
    pub fn decode(&self, input: &[u8]) -> Result<Decoded, HttpError> {
        let Some(head) = self.decode_head(input)? else {
            return Ok(Decoded::Partial {
                expects_continue: false,
            });
        };
        if head.content_length > self.body_bytes_max as u64 {
            return Err(HttpError::BodyTooLarge {
                len: head.content_length,
                max: self.body_bytes_max,
            });
        }
        // Bounded by the body limit just checked, so it fits in usize.
        let body_len = head.content_length as usize;
        let Some(body) = input.get(head.len..head.len + body_len) else {
            return Ok(Decoded::Partial {
                expects_continue: head.expects_continue,
            });
        };
        let mut request = head.request;
        request.body = body.to_vec();
        Ok(Decoded::Request(head.len + body_len, Box::new(request)))
    }

    fn decode_head(&self, input: &[u8]) -> Result<Option<Head>, HttpError> {
        let window = &input[..input.len().min(self.head_bytes_max)];
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        let len = match parsed.parse(window) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if input.len() >= self.head_bytes_max => {
                return Err(HttpError::HeadTooLarge(self.head_bytes_max));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::HeadTooLarge(self.head_bytes_max));
            }
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        };
        let (Some(method), Some(target), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HttpError::Malformed("incomplete request line".into()));
        };
        let mut content_length: Option<u64> = None;
        let mut content_type = None;
        let mut connection = String::new();
        let mut expects_continue = false;
        let mut authorization = None;
        for header in parsed.headers.iter() {
            let value = std::str::from_utf8(header.value)
                .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", header.name)))?
                .trim();
            let name = header.name.to_ascii_lowercase();
            match name.as_str() {
                "content-length" => {
                    let n = value.parse::<u64>().map_err(|_| {
                        HttpError::Malformed(format!("bad Content-Length {value:?}"))
                    })?;
                    if content_length.is_some_and(|m| m != n) {
                        return Err(HttpError::Malformed("conflicting Content-Length".into()));
                    }
                    content_length = Some(n);
                }
                "transfer-encoding" => {
                    return Err(HttpError::Malformed(
                        "Transfer-Encoding is not supported; send Content-Length".into(),
                    ));
                }
                "content-type" => {
                    let essence = value.split(';').next().unwrap_or_default();
                    content_type = Some(essence.trim().to_ascii_lowercase());
                }
                "connection" => connection = value.to_ascii_lowercase(),
                "expect" => expects_continue = value.eq_ignore_ascii_case("100-continue"),
                "authorization" => authorization = Some(value.to_string()),
                _ => {}
            }
        }
        let keep_alive = if version >= 1 {
            !connection.split(',').any(|t| t.trim() == "close")
        } else {
            connection.split(',').any(|t| t.trim() == "keep-alive")
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query.to_string())),
            None => (target.to_string(), None),
        };
        Ok(Some(Head {
            len,
            request: HttpRequest {
                method: method.to_string(),
                path,
                query,
                content_type,
                keep_alive,
                body: Vec::new(),
                authorization,
            },
            content_length: content_length.unwrap_or(0),
            expects_continue,
        }))
    }
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` of the body.
    pub content_type: &'static str,
    /// Extra headers (`Retry-After`, `Allow`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    /// A header added to the response.
    pub fn with_header(mut self, name: &'static str, value: String) -> HttpResponse {
        self.headers.push((name, value));
        self
    }

    /// Appends the wire form to `out`; `close` says `Connection: close`, otherwise
    /// `Connection: keep-alive`.
    pub fn encode(&self, close: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        let mut header = |name: &str, value: &str| {
            // A value can never break the framing: CR and LF are dropped.
            let value: String = value
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n'))
                .collect();
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        };
        header("Content-Type", self.content_type);
        header("Content-Length", &self.body.len().to_string());
        header("Cache-Control", "no-store");
        for (name, value) in &self.headers {
            header(name, value);
        }
        // Said either way, so HTTP/1.0 keep-alive clients (ab -k) keep the connection.
        header("Connection", if close { "close" } else { "keep-alive" });
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// The interim response that lets a client waiting on `Expect: 100-continue` send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of the status codes the API answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the decoder frames requests by Content-Length, keeps keep-alive semantics
    //! of HTTP/1.0 and 1.1, enforces its limits with the right status, and never panics.
    use super::*;
    use proptest::prelude::*;

    fn codec() -> HttpCodec {
        HttpCodec::new(256, 16)
    }

    fn request(input: &[u8]) -> (usize, HttpRequest) {
        match codec().decode(input) {
            Ok(Decoded::Request(used, request)) => (used, *request),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn decodes_requests_in_a_pipeline() {
        let input =
            b"PUT /kv/a%20b?x=1 HTTP/1.1\r\nContent-Type: Application/JSON; charset=utf-8\r\n\
                      content-length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let (used, first) = request(input);
        assert_eq!(first.method, "PUT");
        assert_eq!(first.path, "/kv/a%20b");
        assert_eq!(first.query.as_deref(), Some("x=1"));
        assert_eq!(first.content_type.as_deref(), Some("application/json"));
        assert!(first.keep_alive);
        assert_eq!(first.body, b"hello");
        let (rest_used, second) = request(&input[used..]);
        assert_eq!(used + rest_used, input.len());
        assert_eq!(second.method, "GET");
        assert!(second.body.is_empty());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let cases: [(&[u8], bool); 4] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(request(input).1.keep_alive, *want, "#{i}");
        }
    }

    #[test]
    fn partial_input_waits_and_reports_expect_continue() {
        let cases: [(&[u8], bool); 3] = [
            (b"GET / HT", false),
            (b"PUT /kv/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", false),
            (
                b"PUT /kv/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                true,
            ),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            let got = codec().decode(input);
            assert_eq!(
                got,
                Ok(Decoded::Partial {
                    expects_continue: *want
                }),
                "#{i}"
            );
        }
    }

    #[test]
    fn limits_and_garbage_map_to_their_status() {
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        let partial_long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(HEADERS_MAX + 1)
        );
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (long_header.into_bytes(), 431),
            (partial_long.into_bytes(), 431),
            (many.into_bytes(), 431),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 17\r\n\r\n".to_vec(),
                413,
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
                400,
            ),
            (b"\x00\x01garbage\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 400),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            match codec().decode(input) {
                Err(e) => assert_eq!(e.status(), *want, "#{i}: {e}"),
                Ok(other) => panic!("#{i}: decoded {other:?}"),
            }
        }
    }

    #[test]
    fn responses_carry_length_and_no_injected_lines() {
        let mut out = Vec::new();
        HttpResponse::json(503, b"{}".to_vec())
            .with_header("Retry-After", "1\r\nX-Evil: 1".into())
            .encode(true, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 2\r\n"), "{text}");
        assert!(text.contains("Retry-After: 1X-Evil: 1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{}"), "{text}");
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and a decoded request never claims
        /// more bytes than it was given.
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Decoded::Request(used, request)) = codec().decode(&input) {
                prop_assert!(used <= input.len());
                prop_assert!(request.body.len() <= 16);
            }
        }

        /// Any prefix of a valid request is partial, never an error.
        #[test]
        fn prefixes_are_partial(cut in 0usize..60) {
            let input = b"PUT /kv/k HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
            let cut = cut.min(input.len() - 1);
            let partial = matches!(codec().decode(&input[..cut]), Ok(Decoded::Partial { .. }));
            prop_assert!(partial, "cut at {}", cut);
        }
    }
}
