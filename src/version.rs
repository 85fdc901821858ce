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

/// The system's release version: on the appliance the image's `IMAGE_VERSION` (os-release), which
/// is what updates compare and install; elsewhere this binary's [`VERSION`].
pub fn system_version() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| image_version(&text))
        .unwrap_or_else(|| VERSION.to_string())
}

/// `IMAGE_VERSION` from os-release text, unquoted.
pub fn image_version(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("IMAGE_VERSION=")?;
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_version_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nIMAGE_ID=confab-rpi\nIMAGE_VERSION=\"0.2.0\"\n";
        assert_eq!(super::image_version(text).as_deref(), Some("0.2.0"));
        assert_eq!(super::image_version("ID=debian\nIMAGE_VERSION=\n"), None);
    }
}
