//! The appliance image's own steps (`confab appliance setup|banner`, run by systemd units there).
//!
//! `setup` runs at every boot as root, before the network and confab start. When the owner put a
//! `confab.toml` on the boot partition (the FAT partition any computer can write: the ESP, or the
//! Raspberry Pi's first partition), it moves those settings onto the data partition, keeps a copy
//! without secrets as `confab.toml.applied`, and deletes the original — secrets do not stay on a
//! partition every card reader can read. Then it sets the hostname and builds `/etc/shadow` in
//! `/run` (the root filesystem is read-only): every account is locked unless the owner supplied a
//! console password hash.
//!
//! A file that does not parse is left where it is, untouched, and the error names the line; the
//! device boots on its previous settings. Nothing is deleted before everything is written.
//!
//! `banner` waits for confab to be ready and prints where to reach it, with the one-time admin
//! setup code while no admin password is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the appliance keeps things. Tests point every path into a temporary directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Candidate owner settings files on boot partitions, first found wins.
    pub boot_configs: Vec<PathBuf>,
    /// Device settings on the data partition (`/data/etc`); `/etc/confab` links to `confab/` in it.
    pub data_etc: PathBuf,
    /// The image's `/etc/shadow`, every account locked.
    pub shadow_image: PathBuf,
    /// Where the effective shadow file is written (`/etc/shadow` links here).
    pub shadow_out: PathBuf,
    /// `/proc/sys/kernel/hostname`.
    pub kernel_hostname: PathBuf,
    /// confab's state directory on the data partition (the admin preset goes there).
    pub confab_state: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            boot_configs: vec![
                PathBuf::from("/efi/confab.toml"),
                PathBuf::from("/boot/firmware/confab.toml"),
            ],
            data_etc: PathBuf::from("/data/etc"),
            shadow_image: PathBuf::from("/usr/lib/confab/shadow"),
            shadow_out: PathBuf::from("/run/confab-setup/shadow"),
            kernel_hostname: PathBuf::from("/proc/sys/kernel/hostname"),
            confab_state: PathBuf::from("/data/confab"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{path} is not valid (it was left as it is; the device keeps its previous settings): {detail}")]
    Invalid { path: PathBuf, detail: String },
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> SetupError {
    SetupError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The owner's settings file on the boot partition (`image/confab.toml.example` documents it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    pub hostname: Option<String>,
    #[serde(default)]
    pub admin: crate::auth::admin::Preset,
    #[serde(default)]
    pub console: Console,
    #[serde(default)]
    pub wifi: Option<Wifi>,
    #[serde(default)]
    pub tailscale: Tailscale,
    #[serde(default)]
    pub update: Update,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// A crypt(3) hash (`openssl passwd -6`, `mkpasswd`) for root's console login.
    pub root_password_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    pub psk: String,
    /// ISO 3166 country code, for the radio's allowed channels.
    pub country: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tailscale {
    pub auth_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// `update.url` for the device.
    pub url: Option<String>,
    /// PEM certificate of a private CA that signed the update server's certificate.
    pub ca: Option<String>,
}

impl BootConfig {
    /// Parses and checks the file's text; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<BootConfig, String> {
        let config: BootConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(name) = &config.hostname {
            if !valid_hostname(name) {
                return Err(format!(
                    "hostname {name:?}: use 1-63 letters, digits and '-', not starting or ending with '-'"
                ));
            }
        }
        if let Some(hash) = &config.admin.password_hash {
            if !crate::auth::admin::valid_preset_hash(hash) {
                return Err("admin.password_hash must be an Argon2 hash ($argon2id$…, e.g. from \
                            `argon2` or `confab`'s own admin page); a plain password is not accepted"
                    .into());
            }
        }
        if let Some(code) = &config.admin.setup_code {
            if !(8..=64).contains(&code.len())
                || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err("admin.setup_code: use 8-64 letters, digits and '-'".into());
            }
        }
        if let Some(hash) = &config.console.root_password_hash {
            if !hash.starts_with('$') || hash.contains(':') || hash.contains('\n') {
                return Err(
                    "console.root_password_hash must be a crypt hash such as the output of \
                            `openssl passwd -6` (a plain password is not accepted)"
                        .into(),
                );
            }
        }
        if let Some(wifi) = &config.wifi {
            if wifi.ssid.is_empty() || wifi.ssid.len() > 32 {
                return Err("wifi.ssid must be 1-32 bytes".into());
            }
            if !(8..=63).contains(&wifi.psk.len()) {
                return Err("wifi.psk must be 8-63 characters (WPA2 passphrase)".into());
            }
            let quoted = |s: &str| s.contains('"') || s.contains('\n') || s.contains('\\');
            if quoted(&wifi.ssid) || quoted(&wifi.psk) {
                return Err(
                    "wifi.ssid and wifi.psk cannot contain '\"', '\\' or line breaks".into(),
                );
            }
            if let Some(c) = &wifi.country {
                if c.len() != 2 || !c.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(format!(
                        "wifi.country {c:?}: use a two-letter code such as DE"
                    ));
                }
            }
        }
        if let Some(url) = &config.update.url {
            if !(url.starts_with("https://") || url.starts_with("file:///")) {
                return Err(format!("update.url {url:?}: use https://… or file:///…"));
            }
        }
        if let Some(ca) = &config.update.ca {
            if !ca.contains("-----BEGIN CERTIFICATE-----") {
                return Err("update.ca must be a PEM certificate".into());
            }
        }
        Ok(config)
    }
}

/// An RFC 1123 host name label (the device answers as `<hostname>.local`).
pub fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// What `setup` did, for the console and the journal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// The boot partition file imported this boot, if any.
    pub imported: Option<PathBuf>,
    pub hostname: Option<String>,
    pub console_login: bool,
}

/// [`crate::fsutil::write_atomic`], with the path in the error.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SetupError> {
    crate::fsutil::write_atomic(path, contents, mode).map_err(|e| file_error(path, e))
}

fn remove(path: &Path) -> Result<(), SetupError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_error(path, e)),
        _ => Ok(()),
    }
}

/// Moves the owner's settings from `file` onto the data partition, then replaces `file` by a
/// copy without secrets. Nothing is removed before everything is written.
fn import(file: &Path, config: &BootConfig, paths: &Paths) -> Result<(), SetupError> {
    let etc = &paths.data_etc;
    let secret = etc.join("secret");
    let mut applied = vec![format!(
        "# Applied by confab-setup at {} and removed from this partition; secrets are kept on",
        crate::clock::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    )];
    applied.push(
        "# the data partition only. Put a new confab.toml here to change settings again.".into(),
    );
    if let Some(name) = &config.hostname {
        write_atomic(&etc.join("hostname"), format!("{name}\n").as_bytes(), 0o644)?;
        applied.push(format!("hostname = {name:?}"));
    }
    if config.admin.password_hash.is_some() || config.admin.setup_code.is_some() {
        // Read by confab serve (user confab) at start, then removed: owned like its directory.
        let preset = paths.confab_state.join(crate::auth::admin::PRESET_FILE);
        let text = toml::to_string(&config.admin).map_err(|e| file_error(&preset, e))?;
        write_atomic(&preset, text.as_bytes(), 0o600)?;
        if let Ok(dir) = std::fs::metadata(&paths.confab_state) {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&preset, Some(dir.uid()), Some(dir.gid()))
                .map_err(|e| file_error(&preset, e))?;
        }
        applied.push("# admin: password hash / setup code handed to confab (not shown)".into());
    }
    if let Some(hash) = &config.console.root_password_hash {
        write_atomic(
            &secret.join("root-password-hash"),
            format!("{hash}\n").as_bytes(),
            0o600,
        )?;
        applied.push("# console.root_password_hash: set (not shown)".into());
    }
    if let Some(wifi) = &config.wifi {
        let mut conf = String::from(
            "# Written by confab-setup from the boot partition's confab.toml.\nctrl_interface=DIR=/run/wpa_supplicant\nupdate_config=0\n",
        );
        if let Some(c) = &wifi.country {
            conf.push_str(&format!("country={}\n", c.to_ascii_uppercase()));
        }
        conf.push_str(&format!(
            "network={{\n\tssid=\"{}\"\n\tpsk=\"{}\"\n\tkey_mgmt=WPA-PSK\n}}\n",
            wifi.ssid, wifi.psk
        ));
        write_atomic(
            &secret.join("wpa_supplicant-wlan0.conf"),
            conf.as_bytes(),
            0o600,
        )?;
        applied.push(format!(
            "# wifi: ssid {:?}{} (passphrase not shown)",
            wifi.ssid,
            wifi.country
                .as_deref()
                .map(|c| format!(", country {c}"))
                .unwrap_or_default()
        ));
    }
    if let Some(key) = &config.tailscale.auth_key {
        write_atomic(
            &secret.join("tailscale-auth-key"),
            format!("{key}\n").as_bytes(),
            0o600,
        )?;
        applied.push("# tailscale.auth_key: set (not shown)".into());
    }
    if config.update.url.is_some() || config.update.ca.is_some() {
        let device = etc.join("confab").join("confab.toml");
        let mut table = match std::fs::read_to_string(&device) {
            Ok(text) => text
                .parse::<toml::Table>()
                .map_err(|e| SetupError::Invalid {
                    path: device.clone(),
                    detail: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(file_error(&device, e)),
        };
        let update = table
            .entry("update")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(update) = update.as_table_mut() else {
            return Err(SetupError::Invalid {
                path: device.clone(),
                detail: "`update` is not a table".into(),
            });
        };
        applied.push("[update]".into());
        if let Some(url) = &config.update.url {
            update.insert("url".into(), toml::Value::String(url.clone()));
            applied.push(format!("url = {url:?}"));
        }
        if let Some(ca) = &config.update.ca {
            let ca_path = etc.join("confab").join("update-ca.pem");
            write_atomic(&ca_path, ca.as_bytes(), 0o644)?;
            update.insert(
                "ca_file".into(),
                toml::Value::String("/etc/confab/update-ca.pem".into()),
            );
            applied.push("# ca: installed as /etc/confab/update-ca.pem".into());
        }
        let text = toml::to_string(&table).map_err(|e| file_error(&device, e))?;
        write_atomic(&device, text.as_bytes(), 0o644)?;
    }
    let mut done = file.as_os_str().to_owned();
    done.push(".applied");
    applied.push(String::new());
    write_atomic(Path::new(&done), applied.join("\n").as_bytes(), 0o600)?;
    remove(file)?;
    crate::fsutil::sync_dir(crate::fsutil::parent_dir(file)).map_err(|e| file_error(file, e))
}

/// The image's shadow file with root's password field replaced by `hash` (locked when `None`).
pub fn shadow_with_root(image: &str, hash: Option<&str>) -> String {
    let mut out = String::with_capacity(image.len() + 128);
    for line in image.lines() {
        match line.split_once(':') {
            Some(("root", rest)) => {
                let fields: Vec<&str> = rest.splitn(2, ':').collect();
                let tail = fields.get(1).copied().unwrap_or("::::::");
                out.push_str(&format!("root:{}:{tail}", hash.unwrap_or("*")));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `confab appliance setup`. Errors in the owner's file are reported and skipped; the rest of
/// the setup still runs, so a typo never leaves the device without a hostname or login policy.
pub fn setup(paths: &Paths) -> Result<SetupReport, Vec<SetupError>> {
    let mut report = SetupReport::default();
    let mut errors = Vec::new();
    if let Some(file) = paths.boot_configs.iter().find(|p| p.is_file()) {
        match std::fs::read_to_string(file) {
            Err(e) => errors.push(file_error(file, e)),
            Ok(text) => match BootConfig::parse(&text) {
                Err(detail) => errors.push(SetupError::Invalid {
                    path: file.clone(),
                    detail,
                }),
                Ok(config) => match import(file, &config, paths) {
                    Ok(()) => report.imported = Some(file.clone()),
                    Err(e) => errors.push(e),
                },
            },
        }
    }

    // Hostname: the owner's, else the image's (`confab`).
    let hostname_file = paths.data_etc.join("hostname");
    if let Ok(text) = std::fs::read_to_string(&hostname_file) {
        let name = text.trim();
        if valid_hostname(name) {
            match std::fs::write(&paths.kernel_hostname, name) {
                Ok(()) => report.hostname = Some(name.to_string()),
                Err(e) => errors.push(file_error(&paths.kernel_hostname, e)),
            }
        } else {
            errors.push(SetupError::Invalid {
                path: hostname_file,
                detail: format!("{name:?} is not a valid hostname"),
            });
        }
    }

    // Shadow: locked accounts, plus root's hash when the owner gave one.
    let hash = std::fs::read_to_string(paths.data_etc.join("secret/root-password-hash"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| h.starts_with('$') && !h.contains(':'));
    match std::fs::read_to_string(&paths.shadow_image) {
        Ok(image) => {
            let shadow = shadow_with_root(&image, hash.as_deref());
            match write_atomic(&paths.shadow_out, shadow.as_bytes(), 0o600) {
                Ok(()) => report.console_login = hash.is_some(),
                Err(e) => errors.push(e),
            }
        }
        Err(e) => errors.push(file_error(&paths.shadow_image, e)),
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// The lines `banner` prints: where to open confab, and the setup code if there is one.
pub fn banner_text(
    hostname: &str,
    addresses: &[std::net::IpAddr],
    https_port: u16,
    setup_code: Option<&str>,
) -> String {
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let mut text = format!(
        "\nconfab {} is ready.\n  Open https://{hostname}.local{port}/ in a browser on this network",
        crate::version::system_version()
    );
    let shown: Vec<String> = addresses
        .iter()
        .filter(|a| {
            !a.is_loopback()
                && !matches!(a, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
        })
        .map(|a| match a {
            std::net::IpAddr::V4(v4) => format!("https://{v4}{port}/"),
            std::net::IpAddr::V6(v6) => format!("https://[{v6}]{port}/"),
        })
        .collect();
    if shown.is_empty() {
        text.push_str(".\n");
    } else {
        text.push_str(&format!(" (or {}).\n", shown.join(", ")));
    }
    text.push_str(&format!(
        "  Trust its certificate authority once: http://{hostname}.local/ca.crt\n"
    ));
    match setup_code {
        Some(code) => text.push_str(&format!(
            "  Admin setup: open /admin and enter the setup code {code}\n"
        )),
        None => text.push_str("  Admin: /admin\n"),
    }
    text
}

/// `confab appliance banner`: waits (up to `timeout`) for confab to be ready, then prints
/// [`banner_text`]. Returns the text printed.
pub async fn banner(
    config: &crate::config::Config,
    setup_code_file: &Path,
    timeout: Duration,
) -> String {
    let ready = crate::update::agent::wait_ready(config, timeout).await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "confab".into());
    let addresses: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let code = std::fs::read_to_string(setup_code_file)
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    match ready {
        Ok(()) => banner_text(
            &hostname,
            &addresses,
            config.http.https_port,
            code.as_deref(),
        ),
        Err(e) => format!(
            "\nconfab is not ready: {e}\n  See `journalctl -u confab` (console login: set console.root_password_hash in confab.toml on the boot partition).\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn paths(dir: &Path) -> Paths {
        std::fs::create_dir_all(dir.join("efi")).unwrap();
        std::fs::write(
            dir.join("shadow"),
            "root:*:19000:0:99999:7:::\nconfab:!*:19000::::::\n",
        )
        .unwrap();
        Paths {
            boot_configs: vec![dir.join("efi/confab.toml"), dir.join("fw/confab.toml")],
            data_etc: dir.join("data/etc"),
            shadow_image: dir.join("shadow"),
            shadow_out: dir.join("run/shadow"),
            kernel_hostname: dir.join("hostname"),
            confab_state: dir.join("data/confab"),
        }
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    /// A well-formed Argon2id PHC string (only its form matters here).
    const ARGON: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0hY0kVv6Y3b2kmwPK0bZ5Hk3gBbG6Yb5w0nX9u9uQ1E";

    #[test]
    fn imports_settings_and_removes_secrets_from_the_boot_partition() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let text = format!(
            "hostname = \"meet\"\n[admin]\npassword_hash = \"{ARGON}\"\nsetup_code = \"OWNER-CODE-1\"\n\
             [console]\nroot_password_hash = \"$6$salt$hash\"\n\
             [wifi]\nssid = \"office\"\npsk = \"correct horse\"\ncountry = \"de\"\n\
             [tailscale]\nauth_key = \"tskey-auth-secret\"\n\
             [update]\nurl = \"https://updates.example/confab/\"\nca = \"\"\"{CA}\"\"\"\n"
        );
        std::fs::write(&p.boot_configs[0], &text).unwrap();
        let report = setup(&p).unwrap();
        assert_eq!(
            report.imported.as_deref(),
            Some(p.boot_configs[0].as_path())
        );
        assert_eq!(report.hostname.as_deref(), Some("meet"));
        assert!(report.console_login);
        assert_eq!(std::fs::read_to_string(&p.kernel_hostname).unwrap(), "meet");

        // The original is gone; the copy left on the FAT partition has no secret in it.
        assert!(!p.boot_configs[0].exists());
        let applied = std::fs::read_to_string(dir.path().join("efi/confab.toml.applied")).unwrap();
        for secret in [
            "$6$salt$hash",
            "correct horse",
            "tskey-auth-secret",
            ARGON,
            "OWNER-CODE-1",
        ] {
            assert!(!applied.contains(secret), "{secret} left in {applied}");
        }
        assert!(applied.contains("hostname = \"meet\""), "{applied}");

        // The admin preset waits for confab serve in its state directory.
        let preset: crate::auth::admin::Preset = toml::from_str(
            &std::fs::read_to_string(p.confab_state.join(crate::auth::admin::PRESET_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(preset.password_hash.as_deref(), Some(ARGON));
        assert_eq!(preset.setup_code.as_deref(), Some("OWNER-CODE-1"));

        // Secrets are on the data partition, readable by root only.
        use std::os::unix::fs::PermissionsExt;
        let wpa = p.data_etc.join("secret/wpa_supplicant-wlan0.conf");
        assert!(std::fs::read_to_string(&wpa)
            .unwrap()
            .contains("psk=\"correct horse\""));
        assert!(std::fs::read_to_string(&wpa)
            .unwrap()
            .contains("country=DE"));
        assert_eq!(
            std::fs::metadata(&wpa).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let shadow = std::fs::read_to_string(&p.shadow_out).unwrap();
        assert!(
            shadow.starts_with("root:$6$salt$hash:19000:0:99999:7:::\n"),
            "{shadow}"
        );
        assert!(shadow.contains("confab:!*:"), "{shadow}");

        // The device configuration points at the update server and its CA.
        let device: toml::Table = std::fs::read_to_string(p.data_etc.join("confab/confab.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            device["update"]["url"].as_str(),
            Some("https://updates.example/confab/")
        );
        assert_eq!(
            device["update"]["ca_file"].as_str(),
            Some("/etc/confab/update-ca.pem")
        );

        // Next boot: nothing to import, the settings stay.
        let again = setup(&p).unwrap();
        assert_eq!(again.imported, None);
        assert_eq!(again.hostname.as_deref(), Some("meet"));
        assert!(again.console_login);
    }

    #[test]
    fn a_bad_file_is_left_alone_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        for (text, expect) in [
            ("hostname = \"bad_name!\"\n", "hostname"),
            (
                "[console]\nroot_password_hash = \"hunter2\"\n",
                "crypt hash",
            ),
            ("[wifi]\nssid = \"x\"\npsk = \"short\"\n", "8-63"),
            ("hostnme = \"typo\"\n", "unknown field"),
            ("hostname = \n", "expected"),
            ("[update]\nurl = \"http://plain/\"\n", "https"),
            ("[admin]\npassword_hash = \"hunter2hunter2\"\n", "Argon2"),
        ] {
            std::fs::write(&p.boot_configs[0], text).unwrap();
            let errors = setup(&p).unwrap_err();
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(message.contains(expect), "{text:?}: {message}");
            assert!(message.contains("left as it is"), "{message}");
            assert_eq!(std::fs::read_to_string(&p.boot_configs[0]).unwrap(), text);
            assert!(!p.data_etc.exists(), "nothing written for {text:?}");
            // Root stays locked.
            assert!(std::fs::read_to_string(&p.shadow_out)
                .unwrap()
                .starts_with("root:*:"));
        }
    }

    #[test]
    fn without_a_file_every_account_stays_locked() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let report = setup(&p).unwrap();
        assert_eq!(report, SetupReport::default());
        assert_eq!(
            std::fs::read_to_string(&p.shadow_out).unwrap(),
            "root:*:19000:0:99999:7:::\nconfab:!*:19000::::::\n"
        );
    }

    #[test]
    fn banner_names_the_addresses_and_the_setup_code() {
        let addrs = [
            "127.0.0.1".parse().unwrap(),
            "192.168.1.20".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "fd7a:115c::5".parse().unwrap(),
        ];
        let text = banner_text("confab", &addrs, 443, Some("ABCD-EFGH"));
        assert!(text.contains("https://confab.local/"), "{text}");
        assert!(text.contains("https://192.168.1.20/"), "{text}");
        assert!(text.contains("https://[fd7a:115c::5]/"), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("fe80"),
            "{text}"
        );
        assert!(text.contains("setup code ABCD-EFGH"), "{text}");
        let text = banner_text("meet", &[], 7880, None);
        assert!(text.contains("https://meet.local:7880/"), "{text}");
        assert!(!text.contains("setup code"), "{text}");
    }
}
