//! HTTP plumbing shared by the server's routes (`api`), the signalling upgrade (`signal`) and the
//! update agent (`update`): the response body type and response helpers, who a request came from
//! (`peer`), what one connection may hold (`conn`), and the HTTPS client (`client`). Nothing here
//! knows confab's routes; those modules depend on this one and not on each other.

mod body;
pub mod client;
pub mod conn;
pub mod peer;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The body of every response confab serves (whole, or streamed from disk).
pub use body::Body;

/// `value` as JSON, never cached.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `text` as UTF-8 plain text.
pub fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A body compiled into the binary, with its content type.
pub fn static_response(content_type: &'static str, body: &'static [u8]) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from_static(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
