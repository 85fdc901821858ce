//! The local certificate authority: made once per device, it signs a leaf certificate for the
//! names users type (`localhost`, the hostname, `<hostname>.local`, the public URL's host) and the
//! machine's IPs. The leaf is re-issued when those names change or it nears expiry; the CA stays,
//! so a browser that trusts `/ca.crt` keeps trusting the device.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::Duration;

use super::TlsError;

pub const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const LEAF_CERT_FILE: &str = "server.crt";
const LEAF_KEY_FILE: &str = "server.key";
/// What the current leaf was issued for, so a change of names or IPs re-issues it.
const LEAF_INFO_FILE: &str = "server.json";

/// Apple platforms reject locally trusted server certificates valid for more than 825 days;
/// 397 days also satisfies every browser's public-CA rule.
const LEAF_DAYS: i64 = 397;
const CA_YEARS: i64 = 10;
/// Re-issue the leaf this long before it expires.
const RENEW_BEFORE_DAYS: i64 = 30;

pub struct LocalCa {
    dir: PathBuf,
    pub ca_pem: String,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct LeafInfo {
    names: Vec<String>,
    not_after_unix: i64,
}

/// `localhost`, the hostname and `<hostname>.local`, the public URL's host, loopback and every
/// address of this machine, without duplicates.
pub fn desired_names(public_url: Option<&str>) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let host = hostname();
    if !host.is_empty() && host != "localhost" {
        let short = host.split('.').next().unwrap_or(&host).to_string();
        names.push(host.clone());
        names.push(format!("{short}.local"));
    }
    if let Some(h) = public_url
        .and_then(|u| u.parse::<hyper::Uri>().ok())
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
    {
        names.push(h);
    }
    names.push("127.0.0.1".to_string());
    names.push("::1".to_string());
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for iface in ifaces {
            let ip = iface.ip();
            // Link-local IPv6 needs a zone id in URLs; nobody types those.
            if let IpAddr::V6(v6) = ip {
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
            }
            names.push(ip.to_string());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl LocalCa {
    /// Loads or creates the CA in `dir` and makes sure the leaf covers `names` and is not near
    /// expiry.
    pub fn ensure(dir: &Path, names: &[String]) -> Result<LocalCa, TlsError> {
        let fail = |detail: String| TlsError::LocalCa {
            dir: dir.to_path_buf(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let (ca_pem, ca_key) = load_or_create_ca(dir).map_err(fail)?;
        let ca = LocalCa {
            dir: dir.to_path_buf(),
            ca_pem,
        };
        if ca.leaf_is_current(names) {
            return Ok(ca);
        }
        ca.issue_leaf(&ca_key, names).map_err(fail)?;
        Ok(ca)
    }

    pub fn leaf_cert_path(&self) -> PathBuf {
        self.dir.join(LEAF_CERT_FILE)
    }

    pub fn leaf_key_path(&self) -> PathBuf {
        self.dir.join(LEAF_KEY_FILE)
    }

    fn leaf_is_current(&self, names: &[String]) -> bool {
        let Ok(text) = std::fs::read_to_string(self.dir.join(LEAF_INFO_FILE)) else {
            return false;
        };
        let Ok(info) = serde_json::from_str::<LeafInfo>(&text) else {
            return false;
        };
        let renew_at = info.not_after_unix - Duration::days(RENEW_BEFORE_DAYS).whole_seconds();
        info.names == names
            && crate::clock::now_utc().unix_timestamp() < renew_at
            && self.leaf_cert_path().exists()
            && self.leaf_key_path().exists()
    }

    fn issue_leaf(&self, ca_key: &KeyPair, names: &[String]) -> Result<(), String> {
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, ca_key)
            .map_err(|e| format!("cannot use {CA_CERT_FILE}: {e}"))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.get(1).unwrap_or(&names[0]).as_str(),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "confab");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = crate::clock::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(LEAF_DAYS);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        // Chain: leaf then CA, so clients that trust the CA can build the path.
        let chain = format!("{}{}", cert.pem(), self.ca_pem);
        write_file(&self.leaf_key_path(), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&self.leaf_cert_path(), chain.as_bytes(), 0o644)?;
        let info = LeafInfo {
            names: names.to_vec(),
            not_after_unix: params.not_after.unix_timestamp(),
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
        write_file(&self.dir.join(LEAF_INFO_FILE), &json, 0o644)
    }
}

fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair), String> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&cert_path)
            .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{} is not a valid key: {e}", key_path.display()))?;
        return Ok((pem, key));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let host = hostname();
    let label = if host.is_empty() {
        "device".to_string()
    } else {
        host
    };
    params
        .distinguished_name
        .push(DnType::CommonName, format!("confab local CA ({label})"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "confab");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = crate::clock::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * CA_YEARS);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert.pem(), key))
}

/// Replaces `path` durably ([`crate::fsutil::write_atomic`]): a crash leaves the old file or the
/// new one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    crate::fsutil::write_atomic(path, bytes, mode)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
