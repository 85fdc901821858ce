//! The agent against real files: a release signed with the real `minisign` CLI, slot "devices"
//! as files, the named fake bootloader, a directory source and a real HTTPS server (with a
//! connection drop mid-download). Power is cut after every step of an install.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use super::*;
use crate::config::{Config, Env};
use crate::update::bootloader::fake::FakeBootloader;

const BOARD: &str = "test-board";
const SLOT_SIZE: u64 = 4 << 20;

/// Deterministic pseudo-random bytes (xorshift), so images differ between versions.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signing key pair made with the real minisign CLI (through the release script).
fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    run(Command::new(repo().join("scripts/sign-release.sh"))
        .arg("--generate-key")
        .arg(dir));
    (dir.join("confab.pub"), dir.join("confab.key"))
}

/// A signed release of `version` in `out`, with a root image and two boot files.
fn release(out: &Path, key: &Path, version: &str, image: &[u8]) {
    let work = out.with_extension("src");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("root.img"), image).unwrap();
    std::fs::write(work.join("linux"), bytes(10_000, 7)).unwrap();
    std::fs::write(work.join("initrd"), bytes(5_000, 9)).unwrap();
    run(Command::new(repo().join("scripts/sign-release.sh"))
        .args([
            "--key",
            key.to_str().unwrap(),
            "--board",
            BOARD,
            "--version",
            version,
        ])
        .args(["--image", work.join("root.img").to_str().unwrap()])
        .args(["--boot-file", work.join("linux").to_str().unwrap()])
        .args(["--boot-file", work.join("initrd").to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()]));
}

/// A signed release of `version` holding `image`, with the key pair that signed it.
struct Signed {
    _keys: tempfile::TempDir,
    pubkey: PathBuf,
    dir: PathBuf,
}

fn signed_release(version: &str, image: &[u8]) -> Signed {
    let keys = tempfile::tempdir().unwrap();
    let (pubkey, key) = keypair(keys.path());
    let dir = keys.path().join("release");
    release(&dir, &key, version, image);
    Signed {
        _keys: keys,
        pubkey,
        dir,
    }
}

/// `apply` from the release directory, expected to fail; returns the message.
fn apply_error(config: &Config, rel: &Path, allow_downgrade: bool) -> String {
    runtime()
        .block_on(apply(
            config,
            Some(rel.to_str().unwrap()),
            allow_downgrade,
            false,
            &no_progress(),
        ))
        .unwrap_err()
        .to_string()
}

/// A device: two slot files, the fake bootloader (booted A at the running version), a data file.
struct Device {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: Config,
    old_image: Vec<u8>,
}

impl Device {
    fn new(pubkey: &Path) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let old_image = bytes(3 << 20, 1);
        let slots = root.join("slots");
        std::fs::create_dir_all(&slots).unwrap();
        let mut a = old_image.clone();
        a.resize(SLOT_SIZE as usize, 0);
        std::fs::write(slots.join("root-a"), &a).unwrap();
        std::fs::write(slots.join("root-b"), vec![0u8; SLOT_SIZE as usize]).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/meeting-notes"), b"precious").unwrap();
        FakeBootloader::create(&root.join("boot"), Slot::A, crate::version::VERSION).unwrap();
        let mut config = Config::from_layers(&[], &Env::new()).unwrap();
        config.state_dir = root.join("data");
        config.update.board = BOARD.into();
        config.update.bootloader = crate::config::BootloaderKind::Fake;
        config.update.esp_dir = root.join("boot");
        config.update.slot_dir = slots;
        config.update.trusted_keys = vec![pubkey.to_path_buf()];
        config.update.state_file = root.join("update-state.json");
        Device {
            _dir: dir,
            root,
            config,
            old_image,
        }
    }

    fn slot_bytes(&self, slot: Slot, len: usize) -> Vec<u8> {
        let all = std::fs::read(self.config.update.slot_dir.join(slot.partlabel())).unwrap();
        all[..len].to_vec()
    }

    /// What the firmware would boot now, and that slot's bytes are a complete, known image.
    fn boots_a_good_slot(&self, new_image: &[u8]) -> Slot {
        let slot = FakeBootloader::simulate_boot(&self.root.join("boot")).unwrap();
        let ok = match slot {
            Slot::A => self.slot_bytes(Slot::A, self.old_image.len()) == self.old_image,
            Slot::B => self.slot_bytes(Slot::B, new_image.len()) == new_image,
        };
        assert!(
            ok,
            "the firmware would boot slot {slot}, which does not hold a complete image"
        );
        assert_eq!(
            std::fs::read(self.root.join("data/meeting-notes")).unwrap(),
            b"precious"
        );
        slot
    }
}

fn no_progress() -> impl Fn(&ApplyProgress) + Sync {
    |_: &ApplyProgress| {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn apply_installs_into_the_inactive_slot_and_arms_one_trial() {
    let image = bytes(3 << 20, 42);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let dev = Device::new(pubkey);
    let rt = runtime();

    let report = rt
        .block_on(check(&dev.config, Some(rel.to_str().unwrap())))
        .unwrap();
    assert!(report.newer);
    assert_eq!(report.available, "99.0.0");

    let record = rt
        .block_on(apply(
            &dev.config,
            Some(rel.to_str().unwrap()),
            false,
            false,
            &no_progress(),
        ))
        .unwrap();
    assert_eq!(record.slot, Slot::B);
    assert_eq!(dev.slot_bytes(Slot::B, image.len()), image);
    assert_eq!(
        std::fs::read(dev.root.join("boot/slot-b/linux")).unwrap_or_else(|_| {
            let dir = FakeBootloader::open(&dev.root.join("boot"))
                .unwrap()
                .boot_files_dir(Slot::B)
                .unwrap();
            std::fs::read(dir.join("linux")).unwrap()
        }),
        bytes(10_000, 7)
    );
    let s = status(&dev.config).unwrap();
    assert_eq!(s.state.last_install.as_ref().unwrap().version, "99.0.0");
    assert_eq!(
        s.slots.iter().find(|r| r.slot == Slot::B).unwrap().health,
        SlotHealth::Trying
    );
    // The next boot tries B; a boot that never commits falls back to A after it.
    assert_eq!(dev.boots_a_good_slot(&image), Slot::B);
    assert_eq!(dev.boots_a_good_slot(&image), Slot::A);
}

#[test]
fn power_cut_after_any_step_still_boots_a_good_slot() {
    let image = bytes(3 << 20, 43);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let rt = runtime();
    let steps = {
        let dev = Device::new(pubkey);
        let source = Source::new(&format!("file://{}", rel.display()), None).unwrap();
        let release = rt
            .block_on(fetch_release(&dev.config, &source, false))
            .unwrap();
        InstallPlan::new(&release, Slot::A, SlotHealth::Good, false)
            .unwrap()
            .steps()
            .len()
    };
    for cut_after in 0..=steps {
        let dev = Device::new(pubkey);
        let source = Source::new(&format!("file://{}", rel.display()), None).unwrap();
        let release = rt
            .block_on(fetch_release(&dev.config, &source, false))
            .unwrap();
        let mut plan = InstallPlan::new(&release, Slot::A, SlotHealth::Good, false).unwrap();
        let mut bootloader = open_bootloader(&dev.config).unwrap().unwrap();
        for _ in 0..cut_after {
            rt.block_on(execute_next(
                &dev.config,
                &source,
                bootloader.as_mut(),
                &mut plan,
                &|_, _| {},
            ))
            .unwrap();
        }
        // Power cut: everything in memory is gone; only files remain.
        drop(bootloader);
        let booted = dev.boots_a_good_slot(&image);
        let armed = cut_after >= steps;
        assert_eq!(
            booted,
            if armed { Slot::B } else { Slot::A },
            "cut after {cut_after} of {steps} steps"
        );
    }
}

#[test]
fn power_cut_in_the_middle_of_writing_the_image_boots_the_old_slot() {
    let image = bytes(3 << 20, 44);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Every download of the image stops half-way: the write stops part-way, as a power cut would.
    let server = serve_release(&rt, rel.clone(), usize::MAX);
    let mut dev = Device::new(pubkey);
    dev.config.update.url = Some(format!("https://localhost:{}/", server.port));
    dev.config.update.ca_file = Some(server.ca.clone());
    let err = rt
        .block_on(apply(&dev.config, None, false, false, &no_progress()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("download failed after"), "{err}");
    assert_eq!(dev.boots_a_good_slot(&image), Slot::A);
    assert_eq!(dev.boots_a_good_slot(&image), Slot::A);
}

#[test]
fn a_truncated_release_is_refused_before_anything_is_written() {
    let image = bytes(3 << 20, 45);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let full = std::fs::read(rel.join("root.img")).unwrap();
    std::fs::write(rel.join("root.img"), &full[..full.len() / 2]).unwrap();
    let dev = Device::new(pubkey);
    let before = serde_json::to_string(&status(&dev.config).unwrap().slots).unwrap();
    let err = apply_error(&dev.config, rel, false);
    assert!(
        err.contains("incomplete") && err.contains("nothing was written"),
        "{err}"
    );
    let after = serde_json::to_string(&status(&dev.config).unwrap().slots).unwrap();
    assert_eq!(before, after, "the bootloader's slots changed");
    assert!(
        dev.slot_bytes(Slot::B, image.len()).iter().all(|&b| b == 0),
        "slot B was written"
    );
}

#[test]
fn flipped_byte_in_the_image_is_refused_before_switching() {
    let image = bytes(3 << 20, 45);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let mut tampered = std::fs::read(rel.join("root.img")).unwrap();
    tampered[1_000_000] ^= 0x01;
    std::fs::write(rel.join("root.img"), &tampered).unwrap();
    let dev = Device::new(pubkey);
    let err = apply_error(&dev.config, rel, false);
    assert!(err.contains("SHA-256"), "{err}");
    let s = status(&dev.config).unwrap();
    assert_eq!(
        s.slots.iter().find(|r| r.slot == Slot::B).unwrap().health,
        SlotHealth::Bad
    );
    assert_eq!(dev.boots_a_good_slot(&image), Slot::A);
}

#[test]
fn image_larger_than_the_slot_is_refused() {
    let image = bytes((SLOT_SIZE + 4096) as usize, 46);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let dev = Device::new(pubkey);
    let err = apply_error(&dev.config, rel, false);
    assert!(err.contains("holds only"), "{err}");
    assert_eq!(dev.boots_a_good_slot(&image), Slot::A);
}

#[test]
fn downgrade_and_wrong_board_are_refused_with_reasons() {
    let signed = signed_release("0.0.1", &bytes(1 << 20, 47));
    let dev = Device::new(&signed.pubkey);
    let err = apply_error(&dev.config, &signed.dir, false);
    assert!(err.contains("refusing to downgrade"), "{err}");
    let mut other = dev.config.clone();
    other.update.board = "another-board".into();
    let err = apply_error(&other, &signed.dir, true);
    assert!(err.contains("this device is another-board"), "{err}");
}

#[test]
fn a_device_without_slots_says_so() {
    let mut config = Config::from_layers(&[], &Env::new()).unwrap();
    config.update.url = Some("file:///nonexistent".into());
    let err = runtime()
        .block_on(apply(&config, None, false, false, &no_progress()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no A/B slots"), "{err}");
}

// --- a real HTTPS release server that drops the first image download half-way ---------------

/// A body that sends one chunk, then fails (the connection is cut).
struct Dropping(Option<bytes::Bytes>);

impl hyper::body::Body for Dropping {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.get_mut().0.take() {
            Some(chunk) => Ok(hyper::body::Frame::data(chunk)),
            None => Err(std::io::Error::other("connection cut by the test")),
        }))
    }
}

struct ReleaseServer {
    port: u16,
    ca: PathBuf,
    ranges: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn serve_release(rt: &tokio::runtime::Runtime, dir: PathBuf, drops: usize) -> ReleaseServer {
    use http_body_util::BodyExt;
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::tls::LocalCa::ensure(certs.path(), &["localhost".to_string()]).unwrap();
    let chain = std::fs::read(ca.leaf_cert_path()).unwrap();
    let key = std::fs::read(ca.leaf_key_path()).unwrap();
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&chain)
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let ranges = Arc::new(AtomicUsize::new(0));
    // GETs of root.img answered with half the image and then a cut connection.
    let dropped = Arc::new(AtomicUsize::new(0));
    let ranges2 = ranges.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, dir, ranges, dropped) = (
                acceptor.clone(),
                dir.clone(),
                ranges2.clone(),
                dropped.clone(),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (dir, ranges, dropped) = (dir.clone(), ranges.clone(), dropped.clone());
                        async move {
                            let name = req.uri().path().trim_start_matches('/').to_string();
                            let Ok(data) = std::fs::read(dir.join(&name)) else {
                                let mut r = hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new())
                                        .map_err(|e| match e {})
                                        .boxed(),
                                );
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                return Ok::<_, std::convert::Infallible>(r);
                            };
                            let start = req
                                .headers()
                                .get(hyper::header::RANGE)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("bytes="))
                                .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
                            if name == "root.img"
                                && req.method() == hyper::Method::GET
                                && dropped.fetch_add(1, Ordering::SeqCst) < drops
                            {
                                let half = bytes::Bytes::from(data[..data.len() / 2].to_vec());
                                let mut r = hyper::Response::new(Dropping(Some(half)).boxed());
                                r.headers_mut()
                                    .insert(hyper::header::CONTENT_LENGTH, data.len().into());
                                return Ok(r);
                            }
                            let mut r;
                            if let Some(start) = start {
                                ranges.fetch_add(1, Ordering::SeqCst);
                                r = hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(
                                        data[start..].to_vec(),
                                    ))
                                    .map_err(|e| match e {})
                                    .boxed(),
                                );
                                *r.status_mut() = hyper::StatusCode::PARTIAL_CONTENT;
                                let range =
                                    format!("bytes {start}-{}/{}", data.len() - 1, data.len());
                                r.headers_mut()
                                    .insert(hyper::header::CONTENT_RANGE, range.parse().unwrap());
                            } else {
                                r = hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(data))
                                        .map_err(|e| match e {})
                                        .boxed(),
                                );
                            }
                            Ok(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    ReleaseServer {
        port,
        ca: certs.path().join(crate::tls::CA_CERT_FILE),
        ranges,
        _dir: certs,
    }
}

#[test]
fn https_download_resumes_after_the_connection_drops() {
    let image = bytes(3 << 20, 48);
    let signed = signed_release("99.0.0", &image);
    let (pubkey, rel) = (&signed.pubkey, &signed.dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = serve_release(&rt, rel.clone(), 1);
    let mut dev = Device::new(pubkey);
    dev.config.update.url = Some(format!("https://localhost:{}/", server.port));
    dev.config.update.ca_file = Some(server.ca.clone());
    let record = rt
        .block_on(apply(&dev.config, None, false, false, &no_progress()))
        .unwrap();
    assert_eq!(record.version, "99.0.0");
    assert!(
        server.ranges.load(Ordering::SeqCst) >= 1,
        "the resume must use a range request"
    );
    assert_eq!(dev.slot_bytes(Slot::B, image.len()), image);
}

#[test]
fn https_server_with_an_untrusted_certificate_is_refused() {
    let signed = signed_release("99.0.0", &bytes(1 << 20, 49));
    let (pubkey, rel) = (&signed.pubkey, signed.dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = serve_release(&rt, rel, 0);
    let mut dev = Device::new(pubkey);
    dev.config.update.url = Some(format!("https://localhost:{}/", server.port));
    // No extra CA: the system roots do not know the test CA.
    let err = rt
        .block_on(check(&dev.config, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach the update server") || err.contains("certificate"),
        "{err}"
    );
    let s = status(&dev.config).unwrap();
    assert!(
        s.state.last_check.unwrap().error.is_some(),
        "a failed check is recorded"
    );
}
