#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::Env;

fn config_in(dir: &Path) -> Config {
    let mut c = Config::from_layers(&[], &Env::new()).unwrap();
    c.state_dir = dir.to_path_buf();
    c
}

#[test]
fn local_ca_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_in(dir.path());
    let first = load(&c).unwrap();
    let ca = first.ca_pem.clone().unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(first.summary.contains("localhost"));
    let second = load(&c).unwrap();
    assert_eq!(second.ca_pem.unwrap(), ca, "the CA survives restarts");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("tls/ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600);
}

#[test]
fn leaf_is_reissued_when_names_change_but_ca_stays() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let a = LocalCa::ensure(&tls, &names).unwrap();
    let leaf_a = std::fs::read(a.leaf_cert_path()).unwrap();
    let same = LocalCa::ensure(&tls, &names).unwrap();
    assert_eq!(std::fs::read(same.leaf_cert_path()).unwrap(), leaf_a);
    let more = vec![names[0].clone(), names[1].clone(), "10.9.8.7".to_string()];
    let b = LocalCa::ensure(&tls, &more).unwrap();
    assert_ne!(std::fs::read(b.leaf_cert_path()).unwrap(), leaf_a);
    assert_eq!(a.ca_pem, b.ca_pem);
}

#[test]
fn desired_names_cover_what_users_type() {
    let names = desired_names(Some("wss://meet.example.org:7880"));
    for n in ["localhost", "127.0.0.1", "::1", "meet.example.org"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no duplicates");
}

#[test]
fn configured_files_are_used_and_bad_files_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::ensure(&dir.path().join("made"), &["localhost".to_string()]).unwrap();
    let mut c = config_in(dir.path());
    c.http.tls = TlsSource::Files {
        cert: ca.leaf_cert_path(),
        key: ca.leaf_key_path(),
    };
    let m = load(&c).unwrap();
    assert!(m.ca_pem.is_none());
    assert!(m.summary.contains("server.crt"));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    c.http.tls = TlsSource::Files {
        cert: garbage.clone(),
        key: ca.leaf_key_path(),
    };
    let e = load(&c).err().unwrap().to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );

    c.http.tls = TlsSource::Files {
        cert: ca.leaf_cert_path(),
        key: dir.path().join("missing.key"),
    };
    let e = load(&c).err().unwrap().to_string();
    assert!(
        e.contains("cannot read TLS private key file") && e.contains("missing.key"),
        "{e}"
    );

    // A key that belongs to another certificate.
    let other = LocalCa::ensure(&dir.path().join("other"), &["localhost".to_string()]).unwrap();
    c.http.tls = TlsSource::Files {
        cert: ca.leaf_cert_path(),
        key: other.leaf_key_path(),
    };
    let e = load(&c).err().unwrap().to_string();
    assert!(e.contains("do not work together"), "{e}");
}
