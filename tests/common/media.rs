//! Checking recordings with Debian's ffmpeg (tests/record.rs, tests/record_format.rs).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `ffprobe -show_streams -show_format` of a file, as JSON (panics if ffprobe cannot read it).
pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg, scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Decodes the whole file with ffmpeg; what the decoders complained about (empty: nothing).
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "ffmpeg could not read {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A number in ffprobe's JSON (it writes most as strings); NaN when absent.
pub fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or(f64::NAN)
}
