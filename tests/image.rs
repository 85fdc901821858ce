//! The appliance image, booted in QEMU exactly as a user would flash it: the generic-efi-arm64
//! disk image with only what an owner would add (a `confab.toml` on the boot partition, copied
//! there with mtools the way a card reader would), UEFI firmware (AAVMF), systemd-boot with boot
//! counting, erofs root slots, the ext4 data partition. The serial console is driven like a
//! person at the console would; HTTPS is reached through QEMU's port forwarding.
//!
//! Phases (each prints its duration): first boot and health; data written through the API
//! survives a reboot; a signed v2 is applied, boots from slot B and is committed; a v3 whose
//! daemon cannot start is tried and rolled back on its own; a bundle signed with another key and a
//! truncated one are refused without touching the slots.
//!
//! Needs the images built by `scripts/test-image.sh` (which runs this test): it is ignored by a
//! plain `cargo test` because the images take minutes and root to build.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(900);
const ROOT_PASSWORD: &str = "qemu-console-test";
const ADMIN_PASSWORD: &str = "correct horse battery";

// --- the serial console ------------------------------------------------------------------------

struct Vm {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<Vec<u8>>>,
    cursor: usize,
    marker: u32,
    https_port: u16,
    http_port: u16,
}

impl Vm {
    fn start(work: &Path, disk: &Path, log: &Path) -> Vm {
        let vars = work.join("efivars.fd");
        std::fs::copy("/usr/share/AAVMF/AAVMF_VARS.fd", &vars).expect("AAVMF (qemu-efi-aarch64)");
        let https_port = free_port();
        let http_port = free_port();
        let mut child = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("if=none,id=hd0,format=raw,file={}", disk.display()))
            .args(["-device", "virtio-blk-pci,drive=hd0"])
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{https_port}-:443,hostfwd=tcp:127.0.0.1:{http_port}-:80"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .args(["-device", "virtio-rng-pci"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-aarch64 (Debian qemu-system-arm)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let console = Arc::new(Mutex::new(Vec::new()));
        let sink = console.clone();
        let mut log = std::fs::File::create(log).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = log.write_all(&buf[..n]);
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Vm {
            child,
            stdin,
            console,
            cursor: 0,
            marker: 0,
            https_port,
            http_port,
        }
    }

    fn text_since_cursor(&self) -> String {
        let c = self.console.lock().unwrap();
        String::from_utf8_lossy(&c[self.cursor.min(c.len())..]).replace('\r', "")
    }

    /// Waits until `needle` appears after the cursor; moves the cursor past it and returns the
    /// console text up to and including it.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let c = self.console.lock().unwrap();
                let from = self.cursor.min(c.len());
                if let Some(pos) = find(&c[from..], needle.as_bytes()) {
                    let end = from + pos + needle.len();
                    let text = String::from_utf8_lossy(&c[from..end]).replace('\r', "");
                    self.cursor = end;
                    return text;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU exited ({status}) while waiting for {needle:?}");
            }
            if Instant::now() > deadline {
                let tail: String = self
                    .text_since_cursor()
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!("timed out after {timeout:?} waiting for {needle:?}; console:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn send(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Logs in as root on the serial console (the owner set the hash in confab.toml).
    fn login(&mut self, hostname: &str) {
        // The prompt may already be on the screen (printed before other console output): an
        // empty line makes getty print it again.
        let prompt = format!("{hostname} login:");
        let deadline = Instant::now() + BOOT;
        let mut nudged = Instant::now();
        loop {
            if self.text_since_cursor().contains(&prompt) {
                self.expect(&prompt, Duration::from_secs(1));
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU exited ({status}) while waiting for {prompt:?}");
            }
            assert!(Instant::now() < deadline, "no {prompt:?} within {BOOT:?}");
            if nudged.elapsed() > Duration::from_secs(15) {
                self.send("\n");
                nudged = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        self.send("root\n");
        self.expect("Password:", Duration::from_secs(60));
        self.send(&format!("{ROOT_PASSWORD}\n"));
        self.expect(&format!("root@{hostname}"), Duration::from_secs(60));
        self.sh("export TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0; stty cols 200");
    }

    /// Runs a shell command on the console; returns its exit code and output.
    fn sh_status(&mut self, command: &str, timeout: Duration) -> (i32, String) {
        self.marker += 1;
        let n = self.marker;
        // The typed line echoes back with the format strings, not with the markers they print.
        self.send(&format!(
            "printf '__S%s__\\n' {n}; {command}; printf '__E%s_%s__\\n' {n} $?\n"
        ));
        // (Matched on the raw console bytes, where lines end in \r\n.)
        self.expect(&format!("__S{n}__"), timeout);
        let out = self.expect(&format!("__E{n}_"), timeout);
        let code_text = self.expect("__", Duration::from_secs(10));
        let code = code_text.trim_end_matches("__").parse().unwrap_or(-1);
        let output = out
            .trim_end_matches(&format!("__E{n}_"))
            .trim_start_matches('\n')
            .to_string();
        (code, output)
    }

    /// Runs a command that must succeed.
    fn sh(&mut self, command: &str) -> String {
        let (code, out) = self.sh_status(command, Duration::from_secs(300));
        assert_eq!(code, 0, "`{command}` failed with {code}:\n{out}");
        out
    }

    fn curl(&self, args: &[&str], ca: &Path) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(ca)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", self.https_port))
            .args(args)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    fn wait_ready(&self, ca: &Path) {
        let deadline = Instant::now() + BOOT;
        loop {
            let (code, _) = self.curl(&[&self.url("/api/health/ready")], ca);
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/api/health/ready never became 200"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// --- the update server on the host (the guest reaches it as 10.0.2.2) --------------------------

struct UpdateServer {
    port: u16,
    ca_pem: String,
    /// What `/current/` serves.
    current: Arc<Mutex<PathBuf>>,
    _runtime: tokio::runtime::Runtime,
    _certs: tempfile::TempDir,
}

fn serve_updates(root: PathBuf) -> UpdateServer {
    use rustls::pki_types::pem::PemObject;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = confab::tls::LocalCa::ensure(certs.path(), &["10.0.2.2".to_string()]).unwrap();
    let ca_pem = std::fs::read_to_string(certs.path().join(confab::tls::CA_CERT_FILE)).unwrap();
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(ca.leaf_cert_path())
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(ca.leaf_key_path()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(confab::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let current = Arc::new(Mutex::new(root.join("v2")));
    let current2 = current.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, root, current) = (acceptor.clone(), root.clone(), current2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let (root, current) = (root.clone(), current.clone());
                    async move { Ok::<_, std::convert::Infallible>(serve_file(&root, &current, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    UpdateServer {
        port,
        ca_pem,
        current,
        _runtime: runtime,
        _certs: certs,
    }
}

/// `/current/<file>` from the release the test currently publishes, `/<dir>/<file>` otherwise;
/// honours `Range: bytes=N-` (the agent resumes interrupted downloads).
fn serve_file(
    root: &Path,
    current: &Mutex<PathBuf>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let path = req.uri().path().trim_start_matches('/');
    let file = match path.split_once('/') {
        Some(("current", rest)) => current.lock().unwrap().join("update").join(rest),
        Some((dir, rest)) if !dir.contains("..") && !rest.contains("..") => {
            root.join(dir).join("update").join(rest)
        }
        _ => PathBuf::new(),
    };
    let respond = |status: u16, body: Vec<u8>| {
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    let Ok(data) = std::fs::read(&file) else {
        return respond(404, b"not found".to_vec());
    };
    let start = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    match start {
        Some(start) if start < data.len() => {
            let total = data.len();
            let mut r = respond(206, data[start..].to_vec());
            r.headers_mut().insert(
                "content-range",
                format!("bytes {start}-{}/{total}", total - 1)
                    .parse()
                    .unwrap(),
            );
            r
        }
        _ => respond(200, data),
    }
}

// --- the test ----------------------------------------------------------------------------------

struct Phases(Instant, Instant);

impl Phases {
    fn done(&mut self, name: &str) {
        println!(
            "image test: {name}: {:.0} s (total {:.0} s)",
            self.1.elapsed().as_secs_f64(),
            self.0.elapsed().as_secs_f64()
        );
        self.1 = Instant::now();
    }
}

fn version(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("version"))
        .unwrap_or_else(|e| panic!("{}/version: {e}", dir.display()))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs the images from scripts/test-image.sh, which runs it"]
fn qemu_boot_update_and_rollback() {
    let images = PathBuf::from(
        std::env::var("CONFAB_IMAGE_DIR").expect("CONFAB_IMAGE_DIR (set by scripts/test-image.sh)"),
    );
    let (v1, v2, v3) = (
        version(&images.join("v1")),
        version(&images.join("v2")),
        version(&images.join("v3")),
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu");
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir_in(&out).unwrap();
    let mut phases = Phases(Instant::now(), Instant::now());

    // The card: the image as flashed onto a larger medium, plus the owner's confab.toml.
    let disk = work.path().join("disk.img");
    let flashed = images
        .join("v1")
        .join(format!("confab-{v1}-generic-efi-arm64.img"));
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(&flashed)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(status.success(), "copy {}", flashed.display());
    let image_bytes = std::fs::metadata(&disk).unwrap().len();
    let card_bytes = image_bytes + 512 * 1024 * 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(card_bytes)
        .unwrap();

    let server = serve_updates(images.clone());
    let hash = Command::new("openssl")
        .args(["passwd", "-6", ROOT_PASSWORD])
        .output()
        .expect("openssl");
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    let owner_config = format!(
        "hostname = \"meet\"\n[console]\nroot_password_hash = \"{hash}\"\n[update]\n\
         url = \"https://10.0.2.2:{}/current/\"\nca = \"\"\"\n{}\"\"\"\n",
        server.port, server.ca_pem
    );
    let toml_path = work.path().join("confab.toml");
    std::fs::write(&toml_path, owner_config).unwrap();
    // The ESP is the first partition, at 1 MiB; mtools writes into it inside the disk image.
    let status = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .arg(&toml_path)
        .arg("::/confab.toml")
        .status()
        .expect("mcopy (mtools)");
    assert!(status.success());
    phases.done("prepare the card");

    // --- 1. first boot ---------------------------------------------------------------------------
    let log = out.join("serial.log");
    println!("image test: serial console log: {}", log.display());
    let mut vm = Vm::start(work.path(), &disk, &log);
    let banner = vm.expect("Admin setup: open /admin and enter the setup code ", BOOT);
    assert!(banner.contains("https://meet.local/"), "banner: {banner}");
    let code_line = vm.expect("\n", Duration::from_secs(10));
    let setup_code = code_line.trim().to_string();
    assert!(!setup_code.is_empty());
    phases.done("first boot until the console banner");
    vm.login("meet");
    let state = vm.sh_status("systemctl is-system-running --wait", BOOT);
    if state.1.trim() != "running" {
        let failed = vm
            .sh("systemctl --failed --no-legend; journalctl -b -p warning --no-pager | tail -n 60");
        panic!("system state {:?}:\n{failed}", state.1.trim());
    }
    let status = vm.sh("systemctl status confab --no-pager --lines=0");
    assert!(status.contains("active (running)"), "{status}");
    assert!(status.contains("Status: \""), "no STATUS= line: {status}");
    println!("image test: {}", vm.sh("systemd-analyze").trim());
    // Secrets are off the FAT partition; the data partition grew to fill the card.
    let esp = vm.sh("ls /efi");
    assert!(
        !esp.contains("confab.toml\n") && esp.contains("confab.toml.applied"),
        "{esp}"
    );
    assert!(!vm.sh("cat /efi/confab.toml.applied").contains(&hash));
    let data_kib: u64 = vm
        .sh("df --output=size -k /data | tail -n 1")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        data_kib > 600 * 1024,
        "data partition not grown: {data_kib} KiB"
    );
    // The network-facing daemon is not root.
    let user = vm.sh("stat -c %U /proc/$(systemctl show -p MainPID --value confab)");
    assert_eq!(user.trim(), "confab", "confab runs as {user}");
    // The local CA is the device's own; the host trusts it from now on.
    let ca = work.path().join("device-ca.crt");
    let ca_out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{}/ca.crt", vm.http_port))
        .output()
        .unwrap();
    std::fs::write(&ca, &ca_out.stdout).unwrap();
    vm.wait_ready(&ca);
    phases.done("health: running, confab active with STATUS, /api/health/ready 200");

    // --- 2. data survives a reboot ---------------------------------------------------------------
    let setup = format!("{{\"password\":\"{ADMIN_PASSWORD}\",\"code\":\"{setup_code}\"}}");
    let wrong = format!("{{\"password\":\"{ADMIN_PASSWORD}\",\"code\":\"WRONG-CODE\"}}");
    let json = "content-type: application/json";
    let (code, body) = vm.curl(
        &["-H", json, "-d", &wrong, &vm.url("/api/admin/setup")],
        &ca,
    );
    assert_eq!(
        code, 403,
        "setup without the right code from the network: {body}"
    );
    let (code, body) = vm.curl(
        &["-H", json, "-d", &setup, &vm.url("/api/admin/setup")],
        &ca,
    );
    assert_eq!(code, 200, "admin setup with the console's code: {body}");
    vm.send("systemctl reboot\n");
    vm.login("meet");
    vm.wait_ready(&ca);
    let login = format!("{{\"password\":\"{ADMIN_PASSWORD}\"}}");
    let (code, body) = vm.curl(
        &["-H", json, "-d", &login, &vm.url("/api/admin/login")],
        &ca,
    );
    assert_eq!(code, 200, "admin login after reboot: {body}");
    phases.done("admin password set through the API survives a reboot");

    // --- 3. signed v2 -> slot B -> committed -----------------------------------------------------
    let before = vm.sh("confab update status");
    assert!(before.contains(&format!("running v{v1}")), "{before}");
    let check = vm.sh("confab update check");
    assert!(
        check.contains(&format!("Update available: v{v2}")),
        "{check}"
    );
    vm.send("confab update apply\n");
    vm.expect("Kernel command line:", BOOT);
    let cmdline = vm.expect("\n", Duration::from_secs(10));
    assert!(cmdline.contains("root=PARTLABEL=root-b"), "{cmdline}");
    vm.login("meet");
    vm.wait_ready(&ca);
    let committed = vm.sh(
        "for i in $(seq 120); do confab update status | grep -q 'slot b: Good (booted)' && break; sleep 2; done; confab update status",
    );
    assert!(committed.contains(&format!("running v{v2}")), "{committed}");
    assert!(committed.contains("slot b: Good (booted)"), "{committed}");
    assert!(vm.sh("ls /efi/loader/entries").contains("confab-b.conf"));
    let (code, body) = vm.curl(
        &["-H", json, "-d", &login, &vm.url("/api/admin/login")],
        &ca,
    );
    assert_eq!(code, 200, "admin login on v2: {body}");
    phases.done("v2 applied, booted from slot B, committed, data kept");

    // --- 4. v3 cannot start its daemon -> tried, rolled back on its own --------------------------
    *server.current.lock().unwrap() = images.join("v3");
    vm.send("confab update apply\n");
    let mut trials = 0;
    loop {
        vm.expect("Kernel command line:", BOOT);
        let cmdline = vm.expect("\n", Duration::from_secs(10));
        if cmdline.contains("root=PARTLABEL=root-a") {
            trials += 1;
            continue;
        }
        assert!(cmdline.contains("root=PARTLABEL=root-b"), "{cmdline}");
        break;
    }
    assert!(trials >= 1, "v3 was never tried");
    vm.login("meet");
    vm.wait_ready(&ca);
    let status = vm.sh("confab update status");
    assert!(status.contains(&format!("running v{v2}")), "{status}");
    assert!(
        status.contains(&format!("rolled back: v{v3} was installed into slot a")),
        "{status}"
    );
    let (code, body) = vm.curl(
        &["-H", json, "-d", &login, &vm.url("/api/admin/login")],
        &ca,
    );
    assert_eq!(code, 200, "admin login after the rollback: {body}");
    println!("image test: v3 tried {trials} times, then slot b again");
    phases.done("v3 (daemon fails) rolled back to v2 automatically");

    // --- 5. refused bundles do not touch the slots -----------------------------------------------
    let fingerprint =
        "ls /efi/loader/entries; head -c 16M /dev/disk/by-partlabel/root-a | sha256sum; \
                       head -c 16M /dev/disk/by-partlabel/root-b | sha256sum";
    // Compared word by word, only the entry names and hashes: the serial console sometimes pads
    // a line with spaces (seen once in CI: 51 spaces before the first entry name) or puts a
    // console message from the booting system between the lines (seen once: confab's
    // "is ready" banner), neither of which says anything about the slots.
    let words = |s: String| -> Vec<String> {
        s.split_whitespace()
            .filter(|w| {
                (w.starts_with("confab-") && w.ends_with(".conf"))
                    || (w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .map(str::to_string)
            .collect()
    };
    let before = words(vm.sh(fingerprint));
    assert!(
        before.iter().filter(|w| w.len() == 64).count() == 2
            && before.iter().any(|w| w.ends_with(".conf")),
        "the slots' fingerprint names boot entries and two hashes: {before:?}"
    );
    for (dir, expect) in [("other-key", "does not trust"), ("truncated", "truncated")] {
        let (code, out) = vm.sh_status(
            &format!(
                "confab update apply --no-reboot --from https://10.0.2.2:{}/{dir}/",
                server.port
            ),
            Duration::from_secs(300),
        );
        assert_ne!(code, 0, "{dir} bundle was accepted:\n{out}");
        assert!(out.to_lowercase().contains(expect), "{dir}: {out}");
        assert_eq!(
            words(vm.sh(fingerprint)),
            before,
            "{dir} bundle touched the slots"
        );
    }
    let status = vm.sh("confab update status");
    assert!(status.contains(&format!("running v{v2}")), "{status}");
    phases.done("other-key and truncated bundles refused, slots untouched");
    vm.send("systemctl poweroff\n");
    let _ = vm.child.wait();
}

// --- the Raspberry Pi image (cannot boot here: no Pi firmware in QEMU) -------------------------

/// `(name, first byte)` of each partition, from the image's GPT.
fn partitions(image: &Path) -> Vec<(String, u64)> {
    let out = Command::new("sfdisk")
        .arg("--dump")
        .arg(image)
        .output()
        .expect("sfdisk");
    assert!(out.status.success(), "sfdisk --dump {}", image.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" : start="))
        .map(|l| {
            let start: u64 = l
                .split("start=")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.trim().parse().ok())
                .expect("start=");
            let name = l
                .split("name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("")
                .to_string();
            (name, start * 512)
        })
        .collect()
}

/// A file from a FAT partition inside the image (mtools, no mounting).
fn fat_file(image: &Path, offset: u64, name: &str) -> Vec<u8> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::/{name}"))
        .output()
        .expect("mtype (mtools)");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fat_listing(image: &Path, offset: u64) -> String {
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-b", "-i"])
        .arg(format!("{}@@{offset}", image.display()))
        .arg("::/")
        .output()
        .expect("mdir (mtools)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
#[ignore = "needs the images from scripts/test-image.sh, which runs it"]
fn rpi_image_boot_partitions() {
    use confab::update::bootloader::rpi_tryboot::RpiTryboot;
    use confab::update::bootloader::Bootloader;
    use confab::update::{Slot, SlotHealth};
    let images = PathBuf::from(std::env::var("CONFAB_IMAGE_DIR").expect("CONFAB_IMAGE_DIR"));
    let dir = images.join("rpi");
    let v = version(&dir);
    let image = dir.join(format!("confab-{v}-rpi.img"));
    let parts = partitions(&image);
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["autoboot", "boot-a", "boot-b", "root-a", "root-b", "data"],
        "partition layout"
    );
    let (auto, boot_a) = (parts[0].1, parts[1].1);

    // autoboot.txt: slot A by default, slot B on a tryboot boot; our backend reads it back.
    let autoboot = String::from_utf8(fat_file(&image, auto, "autoboot.txt")).unwrap();
    assert_eq!(
        autoboot,
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let firmware = tmp.path().join("firmware");
    std::fs::create_dir_all(&firmware).unwrap();
    std::fs::create_dir_all(tmp.path().join("slot-a")).unwrap();
    std::fs::create_dir_all(tmp.path().join("slot-b")).unwrap();
    for f in ["autoboot.txt", "confab-slots.json"] {
        std::fs::write(firmware.join(f), fat_file(&image, auto, f)).unwrap();
    }
    let cmdline = String::from_utf8(fat_file(&image, boot_a, "cmdline.txt")).unwrap();
    std::fs::write(tmp.path().join("slot-a/cmdline.txt"), &cmdline).unwrap();
    std::fs::write(tmp.path().join("proc-cmdline"), &cmdline).unwrap();
    let pi = RpiTryboot::new(firmware.clone())
        .with_cmdline(tmp.path().join("proc-cmdline"))
        .with_bootloader_node(tmp.path().join("no-device-tree"));
    assert_eq!(pi.booted().unwrap(), Slot::A);
    assert_eq!(pi.health(Slot::A).unwrap(), SlotHealth::Good);
    assert_eq!(pi.health(Slot::B).unwrap(), SlotHealth::Bad);
    assert_eq!(pi.version(Slot::A).unwrap().as_deref(), Some(v.as_str()));
    assert!(fat_listing(&image, auto).contains("confab.toml.example"));

    // Slot A's boot partition: firmware, device trees, kernel, initrd and their configuration.
    let listing = fat_listing(&image, boot_a);
    for f in [
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "vmlinuz",
        "initrd.img",
        "config.txt",
        "cmdline.txt",
    ] {
        assert!(listing.contains(f), "boot-a lacks {f}:\n{listing}");
    }
    let config = String::from_utf8(fat_file(&image, boot_a, "config.txt")).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "config.txt lacks {line}:\n{config}"
        );
    }
    assert!(
        cmdline.contains("root=PARTLABEL=root-a") && cmdline.contains("rootfstype=erofs"),
        "{cmdline}"
    );
    let kernel = fat_file(&image, boot_a, "vmlinuz");
    assert_eq!(
        &kernel[56..60],
        b"ARM\x64",
        "vmlinuz is not an arm64 kernel Image"
    );

    // The update bundle carries the slot boot partition with the root left to the updater.
    let manifest = std::fs::read_to_string(dir.join("update/manifest.json")).unwrap();
    assert!(
        manifest.contains("cmdline.txt") && manifest.contains("start4.elf"),
        "{manifest}"
    );
    let bundle_cmdline = std::fs::read_to_string(dir.join("update/cmdline.txt")).unwrap();
    assert!(
        bundle_cmdline.contains("root=PARTLABEL=root-@SLOT@"),
        "{bundle_cmdline}"
    );

    // The Raspberry Pi Imager entry describes this image.
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("confab-{v}-rpi.os_list.json"))).unwrap(),
    )
    .unwrap();
    let entry = &list["os_list"][0];
    assert_eq!(entry["init_format"], "none");
    assert_eq!(entry["devices"][0], "pi4-64bit");
    assert_eq!(
        entry["extract_size"].as_u64(),
        Some(std::fs::metadata(&image).unwrap().len())
    );
    let sha = Command::new("sha256sum").arg(&image).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        entry["extract_sha256"].as_str(),
        sha.split_whitespace().next()
    );
}
