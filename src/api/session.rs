//! The admin's session cookie (HttpOnly, Secure, SameSite=Strict), and whether a request carries
//! a live session ([`crate::auth::admin::AdminState`] keeps the sessions). Both the admin API
//! and the web app's join call ask.

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};

use super::App;
use crate::auth::admin::AdminState;
use crate::http::Body;

const COOKIE: &str = "confab_admin";

/// The session token in a request's cookie.
pub(super) fn cookie_token<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// `r` setting the session cookie to `value` for `max_age` seconds (0: remove it).
pub(super) fn with_cookie(mut r: Response<Body>, value: &str, max_age: u64) -> Response<Body> {
    let c =
        format!("{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

impl App {
    /// The admin's password sessions (absent in tests of the plain HTTP routes).
    pub(super) fn admin(&self) -> Option<&AdminState> {
        self.0.admin.as_ref()
    }

    /// Whether `req` carries a live admin session.
    pub(super) fn logged_in<B>(&self, req: &Request<B>) -> bool {
        let (Some(admin), Some(token)) = (self.admin(), cookie_token(req)) else {
            return false;
        };
        admin.has_session(&token)
    }
}
