//! `confab token`: mint a LiveKit access token, signed with this device's (or the configured) key.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::auth::{self, ApiKeys, TokenRequest, VideoGrant};
use crate::config::Config;

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Participant identity (unique in the room).
    #[arg(long)]
    identity: String,
    /// Room the token may join.
    #[arg(long)]
    room: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Participant metadata (free text, often JSON).
    #[arg(long)]
    metadata: Option<String>,
    /// Lifetime, e.g. 600, 30m, 6h, 7d (default: auth.token_ttl_seconds / TOKEN_EXPIRY_SECONDS).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Grant room administration (roomAdmin, roomCreate, roomList) for server APIs.
    #[arg(long)]
    admin: bool,
    /// Do not allow publishing audio/video.
    #[arg(long)]
    no_publish: bool,
    /// Do not allow subscribing to others.
    #[arg(long)]
    no_subscribe: bool,
    /// Do not allow sending data messages.
    #[arg(long)]
    no_data: bool,
    /// Join hidden (others do not see this participant).
    #[arg(long)]
    hidden: bool,
    /// API key to sign with (default: the first one).
    #[arg(long)]
    api_key: Option<String>,
    /// Print JSON with the token, its URL and its grants.
    #[arg(long)]
    json: bool,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as 600, 30m, 6h or 7d, got {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    if secs == 0 {
        return Err("the lifetime must be more than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

pub fn run(config: Config, args: TokenArgs) -> ExitCode {
    let keys = match ApiKeys::load(&config, false) {
        Ok((k, _)) => k,
        Err(e) => return super::fail(e),
    };
    let key = match &args.api_key {
        Some(k) if keys.secret(k).is_some() => k.clone(),
        Some(k) => {
            return super::fail(format!(
                "unknown API key {k:?}; known: {}",
                keys.names().join(", ")
            ))
        }
        None => match keys.primary() {
            Some((k, _)) => k.to_string(),
            None => return super::fail("no API key configured"),
        },
    };
    let mut video = VideoGrant {
        room_join: args.room.as_ref().map(|_| true),
        room: args.room.clone(),
        can_publish: Some(!args.no_publish),
        can_subscribe: Some(!args.no_subscribe),
        can_publish_data: Some(!args.no_data),
        hidden: args.hidden.then_some(true),
        ..Default::default()
    };
    if args.admin {
        video.room_admin = Some(true);
        video.room_create = Some(true);
        video.room_list = Some(true);
    }
    if args.room.is_none() && !args.admin {
        return super::fail("give --room (to join a room) or --admin (for server APIs)");
    }
    let req = TokenRequest {
        identity: args.identity.clone(),
        name: args.name.clone(),
        metadata: args.metadata.clone(),
        ttl: args.ttl.unwrap_or(config.auth.token_ttl),
        video: video.clone(),
        ..Default::default()
    };
    let token = match auth::mint(&keys, &key, &req) {
        Ok(t) => t,
        Err(e) => return super::fail(e),
    };
    if args.json {
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("wss://localhost:{}", config.http.https_port));
        let out = serde_json::json!({
            "token": token,
            "url": url,
            "identity": args.identity,
            "api_key": key,
            "ttl_seconds": req.ttl.as_secs(),
            "video": video,
        });
        println!("{out}");
    } else {
        println!("{token}");
    }
    ExitCode::SUCCESS
}
