//! `GET /metrics` (HTTPS only): the Prometheus exposition of `crate::metrics`, for a bearer
//! token with the `roomList` or `roomAdmin` grant (as `/api/status`), the admin's session
//! cookie, or anyone when `metrics.open = true`.

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::App;
use crate::auth;
use crate::http::{text_response, Body};

pub const PATH: &str = "/metrics";

/// What a refused scrape is told (the token's own refusal comes first).
const HOW: &str = "GET /metrics needs `Authorization: Bearer <token>` with the roomList or \
                   roomAdmin grant (`confab token --admin`), the admin page's session, or \
                   metrics.open = true (CONFAB_METRICS_OPEN) on a trusted network";

impl App {
    /// Answers a scrape.
    pub(super) async fn metrics<B>(&self, req: &Request<B>) -> Response<Body> {
        let Some(metrics) = self.0.metrics.clone() else {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "metrics are not collected");
        };
        if !self.0.metrics_open && !self.logged_in(req) {
            if let Err(refused) = self.metrics_grant(req) {
                return *refused;
            }
        }
        let text = metrics.render().await;
        let mut r = Response::new(Body::new(bytes::Bytes::from(text)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// A bearer token that may list rooms, or the refusal: 401 without a valid token, 403 for
    /// one without the grant, 429 for an address that sent too many bad tokens.
    fn metrics_grant<B>(&self, req: &Request<B>) -> Result<(), Box<Response<Body>>> {
        let client = self.client_ip(req);
        if let Some((status, reason)) = self.token_blocked(client) {
            return Err(Box::new(text_response(status, &format!("{reason}\n"))));
        }
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let claims = match auth::bearer(header).map(|t| auth::verify(&self.keys(), t)) {
            None => Err(auth::AuthError::Missing),
            Some(r) => r,
        };
        match claims {
            Ok(c) if c.may_list_rooms() => Ok(()),
            Ok(_) => Err(Box::new(text_response(
                StatusCode::FORBIDDEN,
                &format!("the token lacks the roomList or roomAdmin grant; {HOW}\n"),
            ))),
            Err(e) => {
                if !matches!(e, auth::AuthError::Missing) {
                    self.token_refused(client, PATH, &e.to_string());
                }
                let mut r = text_response(StatusCode::UNAUTHORIZED, &format!("{e}; {HOW}\n"));
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Err(Box::new(r))
            }
        }
    }
}
