//! What this build is: semver from Cargo.toml, git commit and build date stamped by `build.rs`.

/// Semantic version of this build (from `Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git commit this build came from, or "unknown" (tarball builds).
pub const COMMIT: &str = env!("CONFAB_GIT_SHA");
/// UTC build date, `YYYY-MM-DD`.
pub const BUILD_DATE: &str = env!("CONFAB_BUILD_DATE");

/// `VERSION (COMMIT BUILD_DATE)` as a constant, for `--version`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CONFAB_GIT_SHA"),
    " ",
    env!("CONFAB_BUILD_DATE"),
    ")"
);

/// One line, e.g. `0.1.0 (3f2a9c1d0 2026-11-23)`, used by `--version`, logs and `STATUS=`.
pub fn long() -> &'static str {
    LONG
}
