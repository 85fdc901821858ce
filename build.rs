//! Stamps the build with the git commit and the build date so `confab --version` can say exactly
//! what runs. Works from a tarball without `.git`: `CONFAB_GIT_SHA` may be set by the packager,
//! otherwise the commit is "unknown". `SOURCE_DATE_EPOCH` (reproducible builds) wins over the clock.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=CONFAB_GIT_SHA");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Re-stamp when HEAD moves; harmless when .git is absent.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    // ...and when the work tree's staged state changes, so the "-dirty" mark stays true.
    println!("cargo:rerun-if-changed=.git/index");

    let sha = std::env::var("CONFAB_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(git_short_sha)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CONFAB_GIT_SHA={sha}");

    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=CONFAB_BUILD_DATE={}", iso_date(epoch));

    embed_livekit_client();
}

/// The official livekit-client (web/node_modules, installed by `npm ci` in web/) is embedded so
/// the appliance serves it without internet. Without it the build still works; the module
/// served in its place explains what is missing.
fn embed_livekit_client() {
    const SOURCE: &str = "web/node_modules/livekit-client/dist/livekit-client.esm.mjs";
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("livekit-client.esm.mjs");
    let copied = std::fs::copy(SOURCE, &out).is_ok();
    if !copied {
        println!("cargo:warning=web/node_modules is missing: run `npm ci` in web/ (scripts/install-deps.sh does) to embed livekit-client");
        let stub = "throw new Error('this confab was built without livekit-client: run npm ci in web/ and rebuild');\n";
        if let Err(e) = std::fs::write(&out, stub) {
            println!("cargo:warning=cannot write {}: {e}", out.display());
        }
    }
    println!(
        "cargo:rustc-env=CONFAB_WEB_CLIENT={}",
        if copied { "embedded" } else { "missing" }
    );
}

fn git_short_sha() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{sha}-dirty") } else { sha })
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's civil_from_days.
fn iso_date(epoch_secs: i64) -> String {
    let z = epoch_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
