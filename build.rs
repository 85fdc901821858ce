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
/// the appliance serves it without internet (the dev page at /dev imports it). Without it the
/// build still works; the module served in its place explains what is missing. Then the web app
/// (web/dist, built by scripts/build-web.sh) is embedded: see [`embed_web_app`].
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
    embed_web_app();
}

/// The web app: every file of web/dist (made by `scripts/build-web.sh`, i.e. `npm run build` in
/// web/; never committed) is copied into OUT_DIR/web and listed in OUT_DIR/web_assets.rs as
/// `ASSETS: &[(path, content type, bytes)]` for `src/api/web.rs`. Without web/dist the build
/// still works: the table holds one small page that says the web app was not built.
fn embed_web_app() {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    const DIST: &str = "web/dist";
    println!("cargo:rerun-if-changed={DIST}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let copy_dir = out_dir.join("web");
    let _ = std::fs::remove_dir_all(&copy_dir);

    fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &rel, files)?;
            } else {
                files.push((rel, entry.path()));
            }
        }
        Ok(())
    }
    fn content_type(path: &str) -> &'static str {
        match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
            "html" => "text/html; charset=utf-8",
            "js" | "mjs" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "json" | "map" => "application/json",
            "webmanifest" => "application/manifest+json",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "ico" => "image/x-icon",
            "woff2" => "font/woff2",
            "txt" => "text/plain; charset=utf-8",
            _ => "application/octet-stream",
        }
    }

    let mut files = Vec::new();
    let built = Path::new(DIST).join("index.html").is_file()
        && walk(Path::new(DIST), "", &mut files).is_ok();
    // One line of the table per file; the file itself is copied next to the table.
    let embed = |rel: &str, bytes: &[u8]| -> std::io::Result<String> {
        let dest = copy_dir.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, bytes)?;
        Ok(format!(
            "    ({rel:?}, {:?}, include_bytes!({:?})),\n",
            content_type(rel),
            dest.display().to_string()
        ))
    };
    let mut rows = Vec::new();
    let mut ok = built;
    if built {
        files.sort();
        for (rel, path) in &files {
            match std::fs::read(path).and_then(|bytes| embed(rel, &bytes)) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    println!("cargo:warning=cannot embed web/dist/{rel}: {e}");
                    ok = false;
                    break;
                }
            }
        }
    }
    if !ok {
        rows.clear();
        println!("cargo:warning=web/dist is missing: run scripts/build-web.sh (scripts/install-deps.sh does) to embed the web app");
        let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
            <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>confab</title></head>\
            <body style=\"font-family:system-ui;max-width:40rem;margin:3rem auto;padding:0 1rem\">\
            <h1>The web app was not built</h1><p>This confab binary was built without its web app. \
            Run <code>scripts/build-web.sh</code> (it runs <code>npm ci</code> and <code>npm run build</code> \
            in <code>web/</code>) and build confab again.</p><p>Meanwhile the <a href=\"/dev\">dev meeting \
            page</a> works with tokens from <code>confab token</code>.</p></body></html>\n";
        match embed("index.html", page.as_bytes()) {
            Ok(row) => rows.push(row),
            Err(e) => println!("cargo:warning=cannot write the web app placeholder: {e}"),
        }
    }
    let mut table = String::from(
        "// Generated by build.rs from web/dist: (path in web/dist, content type, bytes).\n\
         pub static ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
    table.extend(rows);
    table.push_str("];\n");
    let _ = writeln!(table, "pub const BUILT: bool = {ok};");
    if let Err(e) = std::fs::write(out_dir.join("web_assets.rs"), table) {
        println!("cargo:warning=cannot write web_assets.rs: {e}");
    }
    println!(
        "cargo:rustc-env=CONFAB_WEB_APP={}",
        if ok { "embedded" } else { "missing" }
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
