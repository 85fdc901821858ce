#![allow(clippy::unwrap_used)]

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn layer(origin: &str, text: &str) -> (String, String) {
    (origin.to_string(), text.to_string())
}

#[test]
fn defaults_are_dev_mode() {
    let c = Config::from_layers(&[], &Env::new()).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("data"));
    assert_eq!(c.http.https_port, DEFAULT_HTTPS_PORT);
    assert_eq!(c.http.http_port, Some(DEFAULT_HTTP_PORT));
    assert_eq!(c.http.tls, TlsSource::LocalCa);
    assert!(
        c.auth.keys.is_empty(),
        "no built-in key: the device makes its own"
    );
    assert_eq!(c.auth.token_ttl, DEFAULT_TOKEN_TTL);
    assert!(c.update.check);
}

#[test]
fn later_layers_and_env_win() {
    let base = layer(
        "/etc/confab/confab.toml",
        "state_dir = \"/var/lib/confab\"\n[http]\nhttps_port = 443\nhttp_port = 80\n",
    );
    let local = layer("confab.toml", "[http]\nhttps_port = 8443\n");
    let e = env(&[
        ("CONFAB_HTTP_PORT", "0"),
        ("TOKEN_EXPIRY_SECONDS", "600"),
        ("LIVEKIT_URL", "wss://meet.example.org"),
        ("CONFAB_DISABLE_UPDATE_CHECK", "true"),
    ]);
    let c = Config::from_layers(&[base, local], &e).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/confab"));
    assert_eq!(c.http.https_port, 8443);
    assert_eq!(c.http.http_port, None, "0 turns the redirect port off");
    assert_eq!(c.auth.token_ttl, Duration::from_secs(600));
    assert_eq!(c.public_url.as_deref(), Some("wss://meet.example.org"));
    assert!(!c.update.check);
}

#[test]
fn livekit_key_pair_from_env() {
    let secret = "s".repeat(40);
    let e = env(&[
        ("LIVEKIT_API_KEY", "APIabc"),
        ("LIVEKIT_API_SECRET", &secret),
    ]);
    let c = Config::from_layers(&[], &e).unwrap();
    assert_eq!(c.auth.keys["APIabc"].expose(), secret);
    assert!(
        !format!("{c:?}").contains(&secret),
        "Debug must not print secrets"
    );
    assert!(
        !c.summary().contains(&secret),
        "summary must not print secrets"
    );
    assert!(c.summary().contains("APIabc"));
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let file = layer(
        "bad.toml",
        "log_level = \"loud[\"\n[http]\nhttps_port = 70000\nhtps_port = 1\ntls_cert = \"/nonexistent/cert.pem\"\n\
         [rtc]\nudp_port = \"x\"\n[keys]\nAPIshort = \"tooshort\"\n",
    );
    let e = env(&[
        ("CONFAB_TCP_PORT", "abc"),
        ("CONFAB_UPDATE_URL", "ftp://x"),
        ("CONFAB_HTTPS_PROT", "1"),
        ("LIVEKIT_API_KEY", "k"),
    ]);
    let errs = Config::from_layers(&[file], &e).unwrap_err().0;
    let text = ConfigErrors(errs.clone()).to_string();
    for needle in [
        "http.https_port (in bad.toml): must be between 1 and 65535, got 70000",
        "http.htps_port (in bad.toml): unknown setting",
        "http.tls_key: is required when http.tls_cert is set",
        "rtc.udp_port (in bad.toml): expected a whole number, got string",
        "CONFAB_TCP_PORT: expected a whole number",
        "CONFAB_UPDATE_URL: URL must start with https:// or file://",
        "CONFAB_HTTPS_PROT: unknown environment variable",
        "LIVEKIT_API_SECRET: is required when LIVEKIT_API_KEY is set",
        "log_level (in bad.toml): not a log level",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(errs.len() >= 9, "{text}");
    assert!(!text.contains("tooshort"), "secrets are never echoed");
}

#[test]
fn short_secret_in_file_is_rejected_without_echo() {
    let file = layer("c.toml", "[keys]\nAPIx = \"abc\"\n");
    let text = Config::from_layers(&[file], &Env::new())
        .unwrap_err()
        .to_string();
    assert!(text.contains("keys.APIx (in c.toml): the API secret must be at least 32"));
    assert!(!text.contains("\"abc\""));
}

#[test]
fn clashing_tcp_ports_are_rejected() {
    let e = env(&[("CONFAB_HTTPS_PORT", "7881")]);
    let text = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(
        text.contains("port 7881 is also used by rtc.tcp_port"),
        "{text}"
    );
}

#[test]
fn invalid_toml_names_the_file() {
    let text = Config::from_layers(&[layer("broken.toml", "[http\n")], &Env::new())
        .unwrap_err()
        .to_string();
    assert!(text.contains("broken.toml: not valid TOML"), "{text}");
}

#[test]
fn update_url_accepts_https_and_absolute_file_urls() {
    for ok in [
        "https://updates.example.org/confab",
        "file:///media/usb/confab",
    ] {
        let c = Config::from_layers(&[], &env(&[("CONFAB_UPDATE_URL", ok)])).unwrap();
        assert_eq!(c.update.url.as_deref(), Some(ok));
    }
    let text = Config::from_layers(&[], &env(&[("CONFAB_UPDATE_URL", "file://relative")]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("absolute path"), "{text}");
}

#[test]
fn update_settings_parse_and_reject_bad_values() {
    let file = layer(
        "c.toml",
        "[update]\nboard = \"generic-efi-arm64\"\nbootloader = \"systemd-boot\"\n\
         trusted_keys = [\"/usr/lib/confab/keys/a.pub\", \"/usr/lib/confab/keys/b.pub\"]\n",
    );
    let c = Config::from_layers(&[file], &Env::new()).unwrap();
    assert_eq!(c.update.board, "generic-efi-arm64");
    assert_eq!(c.update.bootloader, BootloaderKind::SystemdBoot);
    assert_eq!(c.update.trusted_keys.len(), 2);
    assert_eq!(c.update.state_file, PathBuf::from("data/update-state.json"));

    let e = env(&[
        ("CONFAB_BOOTLOADER", "grub"),
        ("CONFAB_BOARD", "pi 4"),
        ("CONFAB_UPDATE_KEYS", "/k/one.pub:/k/two.pub"),
    ]);
    let text = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(
        text.contains(
            "CONFAB_BOOTLOADER: expected one of none, systemd-boot, rpi-tryboot, u-boot, fake"
        ),
        "{text}"
    );
    assert!(text.contains("CONFAB_BOARD: expected letters"), "{text}");
}

#[test]
fn build_stamp_variables_from_cargo_run_are_not_settings() {
    // `cargo run` passes build.rs's rustc-env values to the program.
    let e = env(&[
        ("CONFAB_GIT_SHA", "abc123"),
        ("CONFAB_BUILD_DATE", "2026-11-23"),
    ]);
    assert!(Config::from_layers(&[], &e).is_ok());
}

/// `cargo run` puts build.rs's `rustc-env` variables into the program's environment; each must be
/// on the ignore list, or `scripts/run.sh` stops with "unknown environment variable".
#[test]
fn every_variable_build_rs_stamps_is_ignored() {
    let build_rs = include_str!("../../build.rs");
    let stamped: Vec<&str> = build_rs
        .split("rustc-env=")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .next()
                .unwrap_or("")
        })
        .filter(|v| v.starts_with("CONFAB_"))
        .collect();
    assert!(stamped.len() >= 4, "{stamped:?}");
    for v in stamped {
        assert!(
            super::reader::BUILD_VARS.contains(&v),
            "{v} is not in BUILD_VARS"
        );
    }
}

#[test]
fn media_threads_default_to_the_cores_and_can_be_set() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = Config::from_layers(&[], &Env::new()).unwrap();
    assert_eq!(
        (c.rtc.media_threads, c.rtc.media_threads_auto),
        (cores, true)
    );
    assert!(c
        .summary()
        .contains(&format!("media_threads={cores}(auto)")));
    let c = Config::from_layers(&[], &env(&[("CONFAB_MEDIA_THREADS", "0")])).unwrap();
    assert_eq!(
        (c.rtc.media_threads, c.rtc.media_threads_auto),
        (cores, true)
    );
    let c = Config::from_layers(
        &[layer("c.toml", "[rtc]\nmedia_threads = 3\n")],
        &Env::new(),
    )
    .unwrap();
    assert_eq!((c.rtc.media_threads, c.rtc.media_threads_auto), (3, false));
    assert!(c.summary().contains("media_threads=3 "), "{}", c.summary());
    let e = env(&[("CONFAB_MEDIA_THREADS", "5000")]);
    let text = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(
        text.contains("CONFAB_MEDIA_THREADS: must be between 0 and 1024"),
        "{text}"
    );
}

#[test]
fn media_port_ranges_must_fit_and_not_hold_other_tcp_ports() {
    // Thread 2 of 4 would take ICE-TCP 7883, the HTTPS port.
    let e = env(&[("CONFAB_MEDIA_THREADS", "4"), ("CONFAB_HTTPS_PORT", "7883")]);
    let text = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(
        text.contains("http.https_port: port 7883 is also used by ICE-TCP: with 4 media threads, rtc.tcp_port 7881 means TCP ports 7881..=7884"),
        "{text}"
    );
    // With one thread the same ports are fine (UDP 7883 is not TCP).
    let e = env(&[("CONFAB_MEDIA_THREADS", "1"), ("CONFAB_HTTPS_PORT", "7883")]);
    assert!(Config::from_layers(&[], &e).is_ok());
    let e = env(&[("CONFAB_MEDIA_THREADS", "4"), ("CONFAB_UDP_PORT", "65534")]);
    let text = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(
        text.contains("rtc.udp_port: 4 media threads use ports 65534..=65537, beyond 65535"),
        "{text}"
    );
}

/// Found by `fuzz/fuzz_targets/config.rs`: tracing-subscriber panicked on a directive with leading
/// space and a multi-byte character. Such filters are an error or accepted, never a panic, and an
/// accepted filter comes back with its directives trimmed.
#[test]
fn log_filters_with_spaces_and_multibyte_targets_never_panic() {
    for bad in [" é[", " é=", "  ü[x]", " ünïcode=debug,é["] {
        let file = layer("f.toml", &format!("log_level = {bad:?}\n"));
        let _ = Config::from_layers(&[file], &Env::new());
        let _ = Config::from_layers(&[], &env(&[("CONFAB_LOG_LEVEL", bad)]));
    }
    let c =
        Config::from_layers(&[], &env(&[("CONFAB_LOG_LEVEL", " confab=debug , warn ,")])).unwrap();
    assert_eq!(c.log_level, "confab=debug,warn");
    let e = Config::from_layers(&[], &env(&[("CONFAB_LOG_LEVEL", "loud[")])).unwrap_err();
    assert!(
        e.to_string().contains("CONFAB_LOG_LEVEL: not a log level"),
        "{e}"
    );
}

#[test]
fn webhooks_are_off_unless_urls_are_given() {
    let c = Config::from_layers(&[], &Env::new()).unwrap();
    assert!(c.webhook.urls.is_empty());
    assert_eq!(c.webhook.api_key, None);
}

#[test]
fn webhook_urls_from_a_file_or_a_comma_separated_variable() {
    let file = layer(
        "confab.toml",
        "[webhook]\nurls = [\"https://app.example.org/livekit\", \"http://10.0.0.5:3000/hook?x=1\"]\napi_key = \"APIabc\"\n",
    );
    let c = Config::from_layers(&[file], &Env::new()).unwrap();
    assert_eq!(
        c.webhook.urls,
        [
            "https://app.example.org/livekit",
            "http://10.0.0.5:3000/hook?x=1"
        ]
    );
    assert_eq!(c.webhook.api_key.as_deref(), Some("APIabc"));
    assert!(c.summary().contains("webhook_urls=2"));

    let e = env(&[(
        "CONFAB_WEBHOOK_URLS",
        " http://127.0.0.1:9000/a , https://b.example/ ,",
    )]);
    let c = Config::from_layers(&[], &e).unwrap();
    assert_eq!(
        c.webhook.urls,
        ["http://127.0.0.1:9000/a", "https://b.example/"]
    );
}

#[test]
fn a_bad_webhook_url_is_named_without_its_query() {
    let e = env(&[(
        "CONFAB_WEBHOOK_URLS",
        "https://ok.example/,ftp://files.example/hook?token=hunter2",
    )]);
    let err = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(err.contains("CONFAB_WEBHOOK_URLS"), "{err}");
    assert!(err.contains("entry 2"), "{err}");
    assert!(err.contains("ftp://files.example/hook"), "{err}");
    assert!(!err.contains("hunter2"), "the query is left out: {err}");

    let file = layer("confab.toml", "[webhook]\nurls = \"https://a.example/\"\n");
    let err = Config::from_layers(&[file], &Env::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhook.urls"), "{err}");
    assert!(err.contains("expected a list of URLs"), "{err}");

    let e = env(&[("CONFAB_WEBHOOK_URLS", "https://user:pw@a.example/")]);
    let err = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(err.contains("credentials"), "{err}");
    assert!(!err.contains("pw@"), "{err}");

    let e = env(&[("CONFAB_WEBHOOK_URLS", "https:///nohost")]);
    assert!(Config::from_layers(&[], &e).is_err());
}

#[test]
fn the_webhook_key_must_be_a_configured_key() {
    let secret = "s".repeat(40);
    let e = env(&[
        ("LIVEKIT_API_KEY", "APIabc"),
        ("LIVEKIT_API_SECRET", &secret),
        ("CONFAB_WEBHOOK_URLS", "https://a.example/"),
        ("CONFAB_WEBHOOK_API_KEY", "APIother"),
    ]);
    let err = Config::from_layers(&[], &e).unwrap_err().to_string();
    assert!(err.contains("webhook.api_key"), "{err}");
    assert!(
        err.contains("\"APIother\" is not one of the API keys (APIabc)"),
        "{err}"
    );
    assert!(!err.contains(&secret));

    let e = env(&[
        ("LIVEKIT_API_KEY", "APIabc"),
        ("LIVEKIT_API_SECRET", &secret),
        ("CONFAB_WEBHOOK_API_KEY", "APIabc"),
    ]);
    let c = Config::from_layers(&[], &e).unwrap();
    assert_eq!(c.webhook.api_key.as_deref(), Some("APIabc"));
    // With the device's own keys the check waits for `confab serve` (webhook::Notifier::start).
    let e = env(&[("CONFAB_WEBHOOK_API_KEY", "APIdevice")]);
    assert!(Config::from_layers(&[], &e).is_ok());
}

#[test]
fn metrics_are_closed_unless_opened() {
    let c = Config::from_layers(&[], &Env::new()).unwrap();
    assert!(!c.metrics.open, "a token or the admin session by default");
    let file = layer("confab.toml", "[metrics]\nopen = true\n");
    assert!(
        Config::from_layers(&[file], &Env::new())
            .unwrap()
            .metrics
            .open
    );
    let e = env(&[("CONFAB_METRICS_OPEN", "true")]);
    let c = Config::from_layers(&[], &e).unwrap();
    assert!(c.metrics.open);
    assert!(c.summary().contains("metrics_open=true"));

    let bad = Config::from_layers(
        &[layer("confab.toml", "[metrics]\nopen = \"yes\"\n")],
        &Env::new(),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("metrics.open"), "{bad}");
    let typo = Config::from_layers(
        &[layer("confab.toml", "[metrics]\nopne = true\n")],
        &Env::new(),
    )
    .unwrap_err();
    assert!(typo.to_string().contains("unknown setting"), "{typo}");
}

#[test]
fn turn_is_on_by_default_and_its_ports_can_be_moved_or_turned_off() {
    let c = Config::from_layers(&[], &Env::new()).unwrap();
    assert_eq!(c.turn, crate::config::TurnConfig::default());
    assert!(c.turn.enabled && !c.turn.ports_configured);
    assert!(
        c.summary().contains("turn=udp:3478,tls:5349"),
        "{}",
        c.summary()
    );
    let file = layer(
        "confab.toml",
        "[turn]\nudp_port = 0\ntls_port = 443\ndomain = \"meet.example.org\"\nexternal_tls = true\n",
    );
    let c = Config::from_layers(&[file], &Env::new()).unwrap();
    assert_eq!(c.turn.udp_port, None, "0 turns UDP off");
    assert_eq!(c.turn.tls_port, Some(443));
    assert_eq!(c.turn.domain.as_deref(), Some("meet.example.org"));
    assert!(c.turn.external_tls && c.turn.ports_configured);
    assert!(
        c.summary().contains("turn=udp:off,tcp:443"),
        "{}",
        c.summary()
    );
    let e = env(&[("CONFAB_TURN_ENABLED", "false")]);
    let c = Config::from_layers(&[], &e).unwrap();
    assert!(!c.turn.enabled);
    assert!(c.summary().contains("turn=off"));
    let bad = Config::from_layers(
        &[layer("confab.toml", "[turn]\nudp_port = 70000\n")],
        &Env::new(),
    );
    let e = bad.unwrap_err().to_string();
    assert!(e.contains("turn.udp_port"), "{e}");
}
