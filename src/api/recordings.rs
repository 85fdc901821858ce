//! The web app's and the admin's recordings: `POST /api/recording` (the meeting's Record button:
//! the room records everyone, or stops; a token with `roomRecord`), and under `/api/admin/`
//! (the admin session): `GET recordings` (the list), `GET recordings/<id>/file[?part=N]` (a
//! download, streamed from disk, `Range` honoured so a browser can seek), `DELETE
//! recordings/<id>` (a finished recording's files and entry).

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use livekit_protocol as lk;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::info;

use super::App;
use crate::http::{json_response, Body};
use crate::record::{RecordError, Recorder};

pub const RECORDING: &str = "/api/recording";
const MAX_BODY: usize = 4 << 10;
/// A download is read and sent this much at a time.
const CHUNK: usize = 256 << 10;

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The HTTP status a refusal is answered with.
pub(super) fn status_of(e: &RecordError) -> StatusCode {
    match e {
        RecordError::NotFound(_) => StatusCode::NOT_FOUND,
        RecordError::Invalid(_) => StatusCode::BAD_REQUEST,
        RecordError::Precondition(_) => StatusCode::CONFLICT,
        RecordError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        RecordError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn refused(e: &RecordError) -> Response<Body> {
    error(status_of(e), &e.to_string())
}

fn recorder(app: &App) -> Result<&Recorder, Box<Response<Body>>> {
    app.0.recorder.as_ref().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording is not available on this server",
        ))
    })
}

#[derive(Deserialize)]
struct ToggleBody {
    room: String,
    record: bool,
}

/// `POST /api/recording` `{"room", "record"}` with `Authorization: Bearer <token with
/// roomRecord>`: every participant of the room is recorded (one file each, and each who joins
/// later) until it is turned off.
pub async fn toggle(app: &App, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let client = app.client_ip(&req);
    let token = crate::auth::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .map(str::to_string);
    let body = match crate::http::conn::read_body(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.to_string()),
    };
    if let Some((status, reason)) = app.token_blocked(client) {
        return error(status, &reason);
    }
    let Some(token) = token else {
        return error(StatusCode::UNAUTHORIZED, "no Bearer token in Authorization");
    };
    let claims = match crate::auth::verify(&app.keys(), &token) {
        Ok(c) => c,
        Err(e) => {
            app.token_refused(client, RECORDING, &e.to_string());
            return error(StatusCode::UNAUTHORIZED, &format!("invalid token: {e}"));
        }
    };
    let Ok(b) = serde_json::from_slice::<ToggleBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON with a room and record: true or false",
        );
    };
    if claims.video.room_record != Some(true) {
        return error(
            StatusCode::FORBIDDEN,
            "only the admin (or a token with roomRecord) may record",
        );
    }
    if claims.video.room.as_deref().is_some_and(|r| r != b.room) {
        return error(StatusCode::FORBIDDEN, "the token is for another room");
    }
    let rec = match recorder(app) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let filepath = b
        .record
        .then(|| crate::record::names::default_template(false).to_string());
    match rec.record_room(&b.room, filepath).await {
        Ok(egresses) => {
            info!(room = %b.room, identity = %claims.sub, record = b.record, n = egresses.len(), "room recording switched");
            json_response(
                StatusCode::OK,
                &json!({"recording": b.record, "egresses": egresses}),
            )
        }
        Err(e) => refused(&e),
    }
}

fn status_name(status: i32) -> &'static str {
    lk::EgressStatus::try_from(status).map_or("EGRESS_UNKNOWN", |s| s.as_str_name())
}

/// One recording as the admin page shows it.
fn row(i: &lk::EgressInfo) -> serde_json::Value {
    let (participant, track) = match &i.request {
        Some(lk::egress_info::Request::Participant(p)) => (p.identity.clone(), String::new()),
        Some(lk::egress_info::Request::Track(t)) => (String::new(), t.track_id.clone()),
        _ => (String::new(), String::new()),
    };
    let ms = |ns: i64| ns / 1_000_000;
    let files: Vec<serde_json::Value> = i
        .file_results
        .iter()
        .enumerate()
        .map(|(n, f)| {
            json!({
                "filename": f.filename,
                "size": f.size,
                "durationMs": ms(f.duration),
                "download": format!("/api/admin/recordings/{}/file?part={n}", i.egress_id),
            })
        })
        .collect();
    json!({
        "egressId": i.egress_id,
        "room": i.room_name,
        "participant": participant,
        "track": track,
        "status": status_name(i.status),
        "startedAt": ms(i.started_at),
        "endedAt": ms(i.ended_at),
        "durationMs": i.file_results.iter().map(|f| ms(f.duration)).sum::<i64>(),
        "size": i.file_results.iter().map(|f| f.size).sum::<i64>(),
        "filename": i.file_results.first().map(|f| f.filename.clone()).unwrap_or_default(),
        "error": if i.error.is_empty() { &i.details } else { &i.error },
        "download": if i.file_results.is_empty() { String::new() } else {
            format!("/api/admin/recordings/{}/file", i.egress_id)
        },
        "files": files,
    })
}

/// The admin's recording calls (`path` after `/api/admin/`).
pub async fn admin(app: &App, path: &str, delete: bool, range: Option<&str>) -> Response<Body> {
    let rec = match recorder(app) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let rest = path.strip_prefix("recordings").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (delete, parts.as_slice()) {
        (false, []) => {
            let list: Vec<serde_json::Value> = rec.list("", "", false).iter().map(row).collect();
            json_response(StatusCode::OK, &json!({ "recordings": list }))
        }
        (true, [id]) => match rec.delete(id) {
            Ok(()) => json_response(StatusCode::OK, &json!({"deleted": id})),
            Err(e) => refused(&e),
        },
        (false, [id, "file"]) => {
            let part = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "part")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            match rec.file(id, part) {
                Ok(p) => download(&p, range).await,
                Err(e) => refused(&e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such recordings call"),
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` of a file of `len` bytes: the inclusive range.
fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

/// A recording's file, streamed a chunk at a time (a `Range` answered with 206).
async fn download(path: &std::path::Path, range: Option<&str>) -> Response<Body> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::NOT_FOUND, &format!("cannot open the file: {e}")),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (start, end, partial) = match range {
        Some(h) => match parse_range(h, len) {
            Some((s, e)) => (s, e, true),
            None => {
                let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "bad range");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        },
        None => (0, len.saturating_sub(1), false),
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot seek in the file");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        let mut left = count;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    let mut r = Response::new(Body::stream(rx));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("recording");
    let ctype = if name.ends_with(".mkv") {
        "video/x-matroska"
    } else if name.ends_with(".ogg") {
        "audio/ogg"
    } else {
        "video/webm"
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if partial {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
