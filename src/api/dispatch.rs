//! LiveKit's `livekit.AgentDispatchService` over Twirp (`POST /twirp/livekit.AgentDispatchService/
//! <Method>`): `CreateDispatch`, `DeleteDispatch`, `ListDispatch`, authorised like RoomService's
//! room calls (`roomAdmin` for the room). A dispatch for a room that does not exist yet creates
//! the room, as LiveKit does, without automatic dispatch: the named agent is what was asked for.

use hyper::body::Incoming;
use hyper::{Request, Response};
use livekit_protocol as lk;
use tracing::info;

use super::twirp::{admin_of, authorise, err, mismatched, Call, TwirpError};
use super::App;
use crate::http::Body;
use crate::sfu::{self, limits, Reply};

pub const PREFIX: &str = "/twirp/livekit.AgentDispatchService/";

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let answer = match authorise(app, app.0.media.clone(), req, PREFIX).await {
        Ok((cx, method)) => serve(&cx, &method).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| e.response())
}

async fn serve(cx: &Call, method: &str) -> Result<Response<Body>, TwirpError> {
    let agents = cx
        .agents
        .as_ref()
        .ok_or_else(|| err("unavailable", "the agent service is not running"))?;
    let stopped = |e: crate::agent::Stopped| err("unavailable", e.to_string());
    match method {
        "CreateDispatch" => {
            let r: lk::CreateAgentDispatchRequest = cx.d.parse()?;
            admin_of(&cx.claims, &r.room)?;
            check(&r)?;
            let dispatch = agents
                .create_dispatch(&r.room, &r.agent_name, &r.metadata)
                .await
                .map_err(stopped)?
                .map_err(|e| err("invalid_argument", e))?;
            ensure_room(cx, &r.room).await?;
            info!(room = %r.room, agent_name = %r.agent_name, "agent dispatch created by the API");
            Ok(cx.d.reply(&dispatch))
        }
        "DeleteDispatch" => {
            let r: lk::DeleteAgentDispatchRequest = cx.d.parse()?;
            admin_of(&cx.claims, &r.room)?;
            let deleted = agents
                .delete_dispatch(&r.room, &r.dispatch_id)
                .await
                .map_err(stopped)?
                .ok_or_else(|| {
                    err(
                        "not_found",
                        format!(
                            "dispatch {:?} not found in room {:?}",
                            r.dispatch_id, r.room
                        ),
                    )
                })?;
            Ok(cx.d.reply(&deleted))
        }
        "ListDispatch" => {
            let r: lk::ListAgentDispatchRequest = cx.d.parse()?;
            admin_of(&cx.claims, &r.room)?;
            let agent_dispatches = agents
                .list_dispatches(&r.room, &r.dispatch_id)
                .await
                .map_err(stopped)?;
            Ok(cx
                .d
                .reply(&lk::ListAgentDispatchResponse { agent_dispatches }))
        }
        other => Err(err(
            "bad_route",
            format!("AgentDispatchService has no method {other:?}"),
        )),
    }
}

/// The request's fields, each within its limit (the message names the field, not its content).
fn check(r: &lk::CreateAgentDispatchRequest) -> Result<(), TwirpError> {
    if r.room.is_empty() {
        return Err(err("invalid_argument", "a dispatch needs a room"));
    }
    limits::check_len("the room name", r.room.len(), limits::MAX_ROOM_NAME)
        .and_then(|()| {
            limits::check_len("the agent name", r.agent_name.len(), limits::MAX_AGENT_NAME)
        })
        .and_then(|()| {
            limits::check_len(
                "the dispatch metadata",
                r.metadata.len(),
                limits::MAX_JOB_METADATA,
            )
        })
        .map_err(|e| err("invalid_argument", e))
}

/// Creates `room` unless it exists, with no automatic dispatch.
async fn ensure_room(cx: &Call, room: &str) -> Result<(), TwirpError> {
    let req = sfu::Request::CreateRoom {
        name: room.to_string(),
        settings: sfu::RoomSettings {
            agents: Some(vec![]),
            ..Default::default()
        },
        unix_ms: crate::clock::unix_millis() as i64,
    };
    match cx.ask(room, req).await? {
        Reply::Created(Ok(_)) => Ok(()),
        Reply::Created(Err(e)) => Err(err("resource_exhausted", e.to_string())),
        other => Err(mismatched(other)),
    }
}
