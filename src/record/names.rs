//! Recording file names: LiveKit's `filepath` templates (`{room_name}`, `{time}`, …) expanded
//! into a path **inside** the recordings directory. A template is checked when the recording is
//! asked for (a bad one is refused with the reason); the values put into it (room names,
//! identities) are made safe, so no request reaches outside the directory: no absolute paths, no
//! `..`, no symlinks leading out (checked again when the file is created).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};

/// What a template may name.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub room_name: String,
    pub room_id: String,
    pub identity: String,
    pub track_id: String,
    /// `audio` or `video` (track recordings).
    pub track_type: String,
    /// LiveKit's source name: `camera`, `microphone`, `screen_share`, …
    pub track_source: String,
    /// When the recording started, `YYYY-MM-DDTHHMMSS` (LiveKit's `{time}`), UTC.
    pub time: String,
}

const MAX_TEMPLATE: usize = 256;

/// The template variables LiveKit's egress knows, and which of [`Vars`] each is.
fn var<'a>(name: &str, v: &'a Vars) -> Option<&'a str> {
    Some(match name {
        "room_name" => &v.room_name,
        "room_id" => &v.room_id,
        "publisher_identity" => &v.identity,
        "track_id" => &v.track_id,
        "track_type" => &v.track_type,
        "track_source" => &v.track_source,
        "time" => &v.time,
        _ => return None,
    })
}

/// The default name when the request gives none (or only a directory).
pub fn default_template(track: bool) -> &'static str {
    if track {
        "{room_name}-{track_id}-{time}"
    } else {
        "{room_name}-{publisher_identity}-{time}"
    }
}

/// A value put into a name: letters, digits, `-`, `_`, `.` kept, anything else `_`; never a
/// leading dot (no `..`, no hidden files).
fn safe(value: &str) -> String {
    let mut s: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Checks a template without expanding it: the reason it is refused, if it is.
pub fn check(template: &str) -> Result<(), String> {
    expand(template, &Vars::default(), true).map(|_| ())
}

/// `template` (empty or ending in `/`: the default name appended) with `vars` put in: a relative
/// path of normal components, without an extension when the template gave none.
pub fn expand(template: &str, vars: &Vars, track: bool) -> Result<PathBuf, String> {
    if template.len() > MAX_TEMPLATE {
        return Err(format!(
            "the filepath has {} bytes; at most {MAX_TEMPLATE}",
            template.len()
        ));
    }
    let mut t = template.trim().to_string();
    if t.is_empty() || t.ends_with('/') {
        t.push_str(default_template(track));
    }
    if t.starts_with('/') || t.contains('\\') {
        return Err(format!(
            "the filepath {template:?} must be relative to the recordings directory"
        ));
    }
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("the filepath {template:?} has a '{{' without '}}'"))?;
        let name = &after[..close];
        let value = var(name, vars).ok_or_else(|| {
            format!(
                "the filepath {template:?} uses {{{name}}}; known are {{room_name}}, {{room_id}}, \
                 {{publisher_identity}}, {{track_id}}, {{track_type}}, {{track_source}}, {{time}}"
            )
        })?;
        out.push_str(&safe(value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let path = PathBuf::from(&out);
    let mut parts = 0;
    for c in path.components() {
        match c {
            Component::Normal(p)
                if p.to_str().is_some_and(|s| {
                    !s.starts_with('.')
                        && s.chars().all(|c| !c.is_control() && c != ':' && c != '"')
                }) =>
            {
                parts += 1
            }
            _ => {
                return Err(format!(
                    "the filepath {template:?} must stay inside the recordings directory \
                     (no '..', no '.' names, no absolute paths)"
                ))
            }
        }
    }
    if parts == 0 || parts > 8 {
        return Err(format!(
            "the filepath {template:?} must name a file at most 8 directories deep"
        ));
    }
    Ok(path)
}

/// The container a name asks for, by its extension (`None`: no known extension).
pub fn extension(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "webm" => "webm",
        "mkv" => "mkv",
        "ogg" | "opus" | "oga" => "ogg",
        "mp4" | "m4a" | "mov" => "mp4",
        _ => return None,
    })
}

/// Part `n` (from 1) of a recording: `name.ext`, then `name_2.ext`, …
pub fn part_name(base: &Path, ext: &str, n: u32) -> PathBuf {
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording");
    let name = if n <= 1 {
        format!("{stem}.{ext}")
    } else {
        format!("{stem}_{n}.{ext}")
    };
    base.with_file_name(name)
}

/// Creates `rel` inside `dir` (its directories too), never replacing a file: an existing name
/// gets `-1`, `-2`, … The path created (inside `dir`, also after resolving symlinks).
pub fn create(dir: &Path, rel: &Path) -> io::Result<(PathBuf, File)> {
    let target = dir.join(rel);
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent)?;
    let (root, real) = (dir.canonicalize()?, parent.canonicalize()?);
    if !real.starts_with(&root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} leads outside the recordings directory {}",
                parent.display(),
                root.display()
            ),
        ));
    }
    let stem = target
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording")
        .to_string();
    let ext = target
        .extension()
        .and_then(|s| s.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    for i in 0..1000 {
        let name = if i == 0 {
            format!("{stem}{ext}")
        } else {
            format!("{stem}-{i}{ext}")
        };
        let path = real.join(&name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} and 999 numbered variants exist", target.display()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn vars() -> Vars {
        Vars {
            room_name: "standup".into(),
            room_id: "RM_abc".into(),
            identity: "../../etc/passwd".into(),
            track_id: "TR_x".into(),
            track_type: "video".into(),
            track_source: "camera".into(),
            time: "2026-12-04T101500".into(),
        }
    }

    #[test]
    fn templates_expand_like_livekit() {
        let p = expand("{room_name}/{time}-{track_id}.webm", &vars(), true).unwrap();
        assert_eq!(p, PathBuf::from("standup/2026-12-04T101500-TR_x.webm"));
        let p = expand("", &vars(), true).unwrap();
        assert_eq!(p, PathBuf::from("standup-TR_x-2026-12-04T101500"));
        let p = expand("rooms/", &vars(), false).unwrap();
        assert!(p.starts_with("rooms"), "{p:?}");
    }

    #[test]
    fn values_cannot_leave_the_directory() {
        // The identity "../../etc/passwd" becomes one harmless name.
        let p = expand("{publisher_identity}.webm", &vars(), false).unwrap();
        assert_eq!(p.components().count(), 1, "{p:?}");
        assert!(!p.to_string_lossy().contains('/'));
        assert!(!p.to_string_lossy().starts_with('.'));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (t, why) in [
            ("/etc/x.webm", "relative"),
            ("../x.webm", "inside"),
            ("a/../../x.webm", "inside"),
            ("a/.hidden.webm", "inside"),
            ("{room_name", "without"),
            ("{nope}.webm", "{nope}"),
        ] {
            let e = check(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
        assert!(check(&"a".repeat(300)).unwrap_err().contains("at most"));
    }

    #[test]
    fn files_are_never_replaced_and_symlinks_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create(dir.path(), Path::new("r/x.webm")).unwrap();
        let (b, _) = create(dir.path(), Path::new("r/x.webm")).unwrap();
        assert_ne!(a, b);
        assert!(b.ends_with("x-1.webm"), "{b:?}");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let e = create(dir.path(), Path::new("out/y.webm")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn parts_and_extensions() {
        let base = Path::new("a/b.webm");
        assert_eq!(part_name(base, "webm", 1), PathBuf::from("a/b.webm"));
        assert_eq!(part_name(base, "mkv", 3), PathBuf::from("a/b_3.mkv"));
        assert_eq!(extension(Path::new("x.MP4")), Some("mp4"));
        assert_eq!(extension(Path::new("x")), None);
    }
}
