//! confab: a self-hosted, LiveKit-compatible video-conferencing appliance in one static binary.
//!
//! Modules mirror the architecture (`docs/architecture.md`): `config` is validated before anything
//! binds; `state` keeps sled; `tls` makes or loads certificates; `auth` mints and checks tokens
//! and keeps the admin's password and sessions; `http` is the HTTP plumbing (body, responses,
//! peers, connection limits, the HTTPS client) that `api`, `signal` and `update` share; `api`
//! serves HTTP; `media` owns the media sockets and their thread; `systemd` is every sd_notify call
//! and the log setup; `clock` reads the wall clock; `cli` is the command line. `tests/layout.rs`
//! keeps the modules free of import cycles. The load generator is not here: it is the separate
//! `confab-bench` binary (`src/bench/main.rs`), which the appliance does not ship.

pub mod agent;
pub mod api;
pub mod appliance;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod fsutil;
pub mod http;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod net;
pub mod record;
pub mod sfu;
pub mod signal;
pub mod state;
pub mod systemd;
pub mod tls;
pub mod turn;
pub mod update;
pub mod version;
pub mod webhook;
