//! LiveKit's `livekit.Egress` over Twirp (`POST /twirp/livekit.Egress/<Method>`), so
//! `livekit-server-sdk`'s `EgressClient` and the other server SDKs record through confab:
//! `StartTrackEgress` (file output), `StartParticipantEgress` (file outputs), `ListEgress`,
//! `StopEgress`. Recording happens inside confab without transcoding (`record/`); what needs a
//! renderer (room composite, web, track composite) or a streaming output is refused with
//! `unimplemented` and the alternative. Every method needs the `roomRecord` grant, as in LiveKit.

use hyper::body::Incoming;
use hyper::{Request, Response};
use livekit_protocol as lk;

use super::twirp::{authorise, err, Call, TwirpError};
use super::App;
use crate::http::Body;
use crate::record::RecordError;
use crate::sfu::RecordTarget;

pub const PREFIX: &str = "/twirp/livekit.Egress/";

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let answer = match authorise(app, app.0.media.clone(), req, PREFIX).await {
        Ok((cx, method)) => serve(app, &cx, &method).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| e.response())
}

fn twirp_error(e: RecordError) -> TwirpError {
    let code = match &e {
        RecordError::NotFound(_) => "not_found",
        RecordError::Invalid(_) => "invalid_argument",
        RecordError::Precondition(_) => "failed_precondition",
        RecordError::DiskFull(_) => "resource_exhausted",
        RecordError::Unavailable(_) => "unavailable",
    };
    err(code, e.to_string())
}

/// Needs a renderer or a stream target: refused with what to use instead.
fn unimplemented(what: &str) -> TwirpError {
    err(
        "unimplemented",
        format!(
            "{what} needs a renderer, which confab does not run (it records without transcoding); \
             use StartParticipantEgress (a participant's camera and microphone in one file) or \
             StartTrackEgress (one track) with a file output"
        ),
    )
}

async fn serve(app: &App, cx: &Call, method: &str) -> Result<Response<Body>, TwirpError> {
    if cx.claims.video.room_record != Some(true) {
        return Err(err(
            "permission_denied",
            "the token does not grant roomRecord",
        ));
    }
    let rec = app
        .0
        .recorder
        .as_ref()
        .ok_or_else(|| err("unavailable", "recording is not available on this server"))?;
    match method {
        "StartTrackEgress" => {
            let r: lk::TrackEgressRequest = cx.d.parse()?;
            need("room_name", &r.room_name)?;
            need("track_id", &r.track_id)?;
            let filepath = match &r.output {
                Some(lk::track_egress_request::Output::File(f)) => {
                    if f.output.is_some() {
                        return Err(cloud_upload());
                    }
                    f.filepath.clone()
                }
                Some(lk::track_egress_request::Output::WebsocketUrl(_)) => {
                    return Err(err(
                        "unimplemented",
                        "websocket outputs are not supported; use a file output",
                    ))
                }
                None => String::new(),
            };
            let target = RecordTarget::Track {
                sid: r.track_id.clone(),
            };
            let room = r.room_name.clone();
            let request = lk::egress_info::Request::Track(r);
            let info = rec
                .start_recording(&room, target, &filepath, request)
                .await
                .map_err(twirp_error)?;
            Ok(cx.d.reply(&info))
        }
        "StartParticipantEgress" => {
            let r: lk::ParticipantEgressRequest = cx.d.parse()?;
            need("room_name", &r.room_name)?;
            need("identity", &r.identity)?;
            if !r.stream_outputs.is_empty() || !r.segment_outputs.is_empty() {
                return Err(err(
                    "unimplemented",
                    "stream and segment outputs need transcoding; use file_outputs",
                ));
            }
            if r.file_outputs.iter().any(|f| f.output.is_some()) {
                return Err(cloud_upload());
            }
            if r.file_outputs.len() > 1 {
                return Err(err("invalid_argument", "give at most one file output"));
            }
            let filepath = r
                .file_outputs
                .first()
                .map(|f| f.filepath.clone())
                .unwrap_or_default();
            let target = RecordTarget::Participant {
                identity: r.identity.clone(),
                screen_share: r.screen_share,
            };
            let room = r.room_name.clone();
            let request = lk::egress_info::Request::Participant(r);
            let info = rec
                .start_recording(&room, target, &filepath, request)
                .await
                .map_err(twirp_error)?;
            Ok(cx.d.reply(&info))
        }
        "ListEgress" => {
            let r: lk::ListEgressRequest = cx.d.parse()?;
            let items = rec.list(&r.room_name, &r.egress_id, r.active);
            Ok(cx.d.reply(&lk::ListEgressResponse {
                items,
                next_page_token: None,
            }))
        }
        "StopEgress" => {
            let r: lk::StopEgressRequest = cx.d.parse()?;
            need("egress_id", &r.egress_id)?;
            let info = rec.stop(&r.egress_id).map_err(twirp_error)?;
            Ok(cx.d.reply(&info))
        }
        "StartRoomCompositeEgress" => Err(unimplemented("a room composite recording")),
        "StartWebEgress" => Err(unimplemented("a web page recording")),
        "StartTrackCompositeEgress" => Err(unimplemented("a track composite recording")),
        "UpdateLayout" => Err(unimplemented("a layout")),
        "UpdateStream" => Err(err(
            "unimplemented",
            "confab's recordings write files, not streams: there is no stream to update",
        )),
        other => Err(err("bad_route", format!("Egress has no method {other:?}"))),
    }
}

fn need(field: &str, value: &str) -> Result<(), TwirpError> {
    if value.is_empty() {
        return Err(err("invalid_argument", format!("{field} is required")));
    }
    if value.len() > 256 {
        return Err(err("invalid_argument", format!("{field} is too long")));
    }
    Ok(())
}

fn cloud_upload() -> TwirpError {
    err(
        "unimplemented",
        "uploads (S3, GCP, Azure, AliOSS) are not supported: confab keeps recordings on its own \
         disk (download them from /admin)",
    )
}
