//! The limit: only what forwarding must do per packet — SRTP-protect an RTP packet (AES-128-GCM,
//! or AES-128-CM with HMAC-SHA1-80, through aws-lc-rs, str0m's crypto provider) and send it with
//! `sendmmsg` to a loopback socket in batches. Packets per second of one core's CPU time.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;

/// A typical forwarded packet: a video packet near the MTU (str0m packetises at ~1150 bytes of
/// payload); audio packets are smaller and cheaper.
const PAYLOAD: usize = 1100;
const HEADER: usize = 12;
const BATCH: usize = 32;

pub struct LimitResult {
    pub gcm_pps: f64,
    pub cm_pps: f64,
    pub send_only_pps: f64,
}

impl LimitResult {
    /// The faster of the two ciphers (what a browser negotiates with str0m: AES-GCM first).
    pub fn best(&self) -> f64 {
        self.gcm_pps.max(self.cm_pps)
    }
}

impl std::fmt::Display for LimitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit ({PAYLOAD}-byte payloads, sendmmsg ×{BATCH} to loopback, per core): \
             AES-128-GCM {:.0} packets/s, AES-128-CM+HMAC-SHA1-80 {:.0} packets/s, \
             sendmmsg alone {:.0} packets/s",
            self.gcm_pps, self.cm_pps, self.send_only_pps
        )
    }
}

#[derive(Clone, Copy)]
enum Cipher {
    None,
    Gcm,
    Cm,
}

struct Protector {
    gcm: LessSafeKey,
    ctr: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; 12],
}

impl Protector {
    fn new() -> Option<Protector> {
        let key = [7u8; 16];
        Some(Protector {
            gcm: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).ok()?),
            ctr: EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &key).ok()?).ok()?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[9u8; 20]),
            salt: [3u8; 12],
        })
    }

    /// Protects `pkt` (header + payload) in place into `out`; returns the length.
    fn protect(&self, c: Cipher, seq: u16, pkt: &mut Vec<u8>) -> Option<()> {
        let ssrc = [0x11, 0x22, 0x33, 0x44];
        match c {
            Cipher::None => Some(()),
            Cipher::Gcm => {
                // RFC 7714: IV = salt XOR (00 00 || SSRC || ROC || SEQ).
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[10..12].copy_from_slice(&seq.to_be_bytes());
                for (a, b) in iv.iter_mut().zip(self.salt) {
                    *a ^= b;
                }
                let (hdr, body) = pkt.split_at_mut(HEADER);
                let tag = self
                    .gcm
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&*hdr),
                        body,
                    )
                    .ok()?;
                pkt.extend_from_slice(tag.as_ref());
                Some(())
            }
            Cipher::Cm => {
                // RFC 3711: IV = (salt << 16) XOR (SSRC << 64) XOR (index << 16).
                let mut iv = [0u8; 16];
                iv[4..8].copy_from_slice(&ssrc);
                iv[12..14].copy_from_slice(&seq.to_be_bytes());
                for (a, b) in iv.iter_mut().zip(self.salt) {
                    *a ^= b;
                }
                let body = pkt.get_mut(HEADER..)?;
                self.ctr
                    .less_safe_encrypt(body, EncryptionContext::Iv128(iv.into()))
                    .ok()?;
                let mut ctx = hmac::Context::with_key(&self.auth);
                ctx.update(pkt);
                ctx.update(&0u32.to_be_bytes()); // ROC
                let tag = ctx.sign();
                pkt.extend_from_slice(tag.as_ref().get(..10)?);
                Some(())
            }
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sends `bufs` with one sendmmsg call on a connected socket; returns how many went.
fn sendmmsg(sock: &UdpSocket, bufs: &[Vec<u8>]) -> usize {
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs points at valid headers whose iovecs point at live buffers.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    n.max(0) as usize
}

fn measure(c: Cipher, p: &Protector, time: Duration) -> f64 {
    let (Ok(sink), Ok(sock)) = (
        UdpSocket::bind("127.0.0.1:0"),
        UdpSocket::bind("127.0.0.1:0"),
    ) else {
        return 0.0;
    };
    let Ok(to) = sink.local_addr() else {
        return 0.0;
    };
    if sock.connect(to).is_err() {
        return 0.0;
    }
    let plain: Vec<u8> = (0..HEADER + PAYLOAD).map(|i| i as u8).collect();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut seq = 0u16;
    let mut sent = 0u64;
    let (wall, cpu0) = (Instant::now(), thread_cpu());
    while wall.elapsed() < time {
        for b in bufs.iter_mut() {
            b.clear();
            b.extend_from_slice(&plain);
            seq = seq.wrapping_add(1);
            b[2..4].copy_from_slice(&seq.to_be_bytes());
            if p.protect(c, seq, b).is_none() {
                return 0.0;
            }
        }
        sent += sendmmsg(&sock, &bufs) as u64;
        // The sink is never read: the kernel drops what does not fit, as it would for a slow
        // receiver; the sender's work is the same.
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    if cpu > 0.0 {
        sent as f64 / cpu
    } else {
        0.0
    }
}

/// Runs the limit on `core` (a thread pinned there) for `time` per cipher.
pub fn run(core: Option<usize>, time: Duration) -> LimitResult {
    let t = std::thread::spawn(move || {
        if let Some(c) = core {
            super::pin_current_thread(&[c]);
        }
        let Some(p) = Protector::new() else {
            return LimitResult {
                gcm_pps: 0.0,
                cm_pps: 0.0,
                send_only_pps: 0.0,
            };
        };
        LimitResult {
            gcm_pps: measure(Cipher::Gcm, &p, time),
            cm_pps: measure(Cipher::Cm, &p, time),
            send_only_pps: measure(Cipher::None, &p, time),
        }
    });
    t.join().unwrap_or(LimitResult {
        gcm_pps: 0.0,
        cm_pps: 0.0,
        send_only_pps: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ciphers_add_their_tags() {
        let p = Protector::new().expect("keys");
        let mut a = vec![0u8; HEADER + 100];
        p.protect(Cipher::Gcm, 1, &mut a).expect("gcm");
        assert_eq!(a.len(), HEADER + 100 + 16);
        let mut b = vec![0u8; HEADER + 100];
        p.protect(Cipher::Cm, 1, &mut b).expect("cm");
        assert_eq!(b.len(), HEADER + 100 + 10);
        assert_ne!(&b[HEADER..HEADER + 100], &[0u8; 100][..]);
    }
}
