//! The bundled web app (home, pre-join, meeting): the files of `web/dist`, embedded by build.rs
//! (`OUT_DIR/web_assets.rs`). The app is one page: `/`, every invite link `/r/<room>` and the
//! admin page `/admin` answer with the same `index.html`, which reads the view from the address. Without a built web app the
//! table holds a page that says so (the binary still builds and runs).

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Whether the binary carries the built web app (false: only the "not built" page).
pub fn built() -> bool {
    BUILT
}

/// The embedded file for a request path: its content type and bytes. `/`, `/r/<room>` and
/// `/admin` give `index.html`; other paths name a file of `web/dist` (`/assets/app-….js`, `/sw.js`,
/// `/manifest.webmanifest`, icons). `None`: not part of the web app.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let file = if is_page(path) {
        "index.html"
    } else {
        let rel = path.strip_prefix('/')?;
        if rel.is_empty() || rel == "index.html" {
            return None;
        }
        rel
    };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == file)
        .map(|(_, content_type, bytes)| (*content_type, *bytes))
}

/// `Cache-Control` for a path [`asset`] answered: the files under `/assets/` (the app and the
/// E2EE worker, `<name>-<content hash>.<ext>`) never change; the page, the service worker, the
/// manifest and icons are revalidated every time.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// The app's page addresses: home, the admin page and invite links `/r/<room>` (one segment; the
/// page itself checks the room name and says when it is not one).
fn is_page(path: &str) -> bool {
    if matches!(path, "/" | "/admin" | "/admin/") {
        return true;
    }
    match path.strip_prefix("/r/") {
        Some(rest) => {
            let room = rest.strip_suffix('/').unwrap_or(rest);
            !room.is_empty() && !room.contains('/')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_invite_links_are_the_same_page() {
        let (ct, home) = asset("/").expect("/ is the web app");
        assert_eq!(ct, "text/html; charset=utf-8");
        assert_eq!(asset("/r/standup"), Some((ct, home)));
        assert_eq!(asset("/r/team-1.b_2/"), Some((ct, home)));
        assert_eq!(asset("/admin"), Some((ct, home)));
        assert_eq!(asset("/admin/"), Some((ct, home)));
        for not_a_page in [
            "/r/",
            "/r",
            "/r/a/b",
            "/index.html",
            "/nope",
            "",
            "/assets/",
            "/admin/x",
            "/administrator",
        ] {
            assert_eq!(asset(not_a_page), None, "{not_a_page}");
        }
    }

    #[test]
    fn every_embedded_file_is_served_with_a_content_type() {
        for (path, ct, bytes) in ASSETS {
            if *path == "index.html" {
                continue;
            }
            let url = format!("/{path}");
            assert_eq!(asset(&url), Some((*ct, *bytes)), "{url}");
            assert!(!ct.is_empty() && !path.contains(".."), "{path}");
        }
    }

    #[test]
    fn the_page_names_only_embedded_assets() {
        let (_, page) = asset("/").expect("/ is always served");
        let page = std::str::from_utf8(page).expect("index.html is UTF-8");
        if !built() {
            assert!(page.contains("not built"), "{page}");
            return;
        }
        assert!(page.contains("<meta name=\"confab-app\""), "{page}");
        let mut found = 0;
        for quoted in page.split('"').filter(|s| s.starts_with("/assets/")) {
            found += 1;
            assert!(
                asset(quoted).is_some(),
                "index.html names {quoted}, which is not embedded"
            );
            assert_eq!(cache_control(quoted), "public, max-age=31536000, immutable");
        }
        assert!(
            found >= 2,
            "index.html should load the app's JS and CSS: {page}"
        );
        for shell in [
            "/sw.js",
            "/manifest.webmanifest",
            "/icon.svg",
            "/icon-192.png",
        ] {
            assert!(asset(shell).is_some(), "{shell}");
            assert_eq!(cache_control(shell), "no-cache");
        }
    }
}
