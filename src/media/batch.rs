//! Batched UDP IO: `recvmmsg` takes up to [`BATCH`] datagrams per system call and `sendmmsg`
//! sends up to [`BATCH`] per call. Forwarding turns one received packet into many sent ones, so
//! one syscall per datagram was a large part of the media thread's CPU time.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

pub const BATCH: usize = 32;
/// Longest datagram received (str0m sends at most 1200-byte UDP payloads; browsers ~1250).
pub const MAX_DATAGRAM: usize = 2048;

/// Buffers for one `recvmmsg` call, reused every time (no allocation per datagram).
pub struct RecvBatch {
    data: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    /// Room for each datagram's control messages (its `SO_TIMESTAMPNS` arrival time).
    control: [[u64; CONTROL_WORDS]; BATCH],
    /// When each datagram reached the kernel, ns since the Unix epoch (0: not known).
    arrived_ns: [u64; BATCH],
}

/// 64 bytes: one `cmsghdr` with a `timespec`, with room to spare.
const CONTROL_WORDS: usize = 8;

/// Asks the kernel to stamp each datagram's arrival (`SO_TIMESTAMPNS`, wall clock), for
/// [`RecvBatch::arrived_ns`].
pub fn enable_arrival_stamps(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value that lives for the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0u8; BATCH * MAX_DATAGRAM],
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
            addrs: unsafe { zeroed() },
            control: [[0; CONTROL_WORDS]; BATCH],
            arrived_ns: [0; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams; `Ok(0)` never happens (WouldBlock instead).
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, chunk) in self
            .data
            .chunks_exact_mut(MAX_DATAGRAM)
            .enumerate()
            .take(BATCH)
        {
            iov[i].iov_base = chunk.as_mut_ptr().cast();
            iov[i].iov_len = MAX_DATAGRAM;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            msgs[i].msg_hdr.msg_control = self.control[i].as_mut_ptr().cast();
            msgs[i].msg_hdr.msg_controllen = (CONTROL_WORDS * 8) as _;
        }
        // SAFETY: every header points at a live buffer of MAX_DATAGRAM bytes and a live
        // sockaddr_storage, all owned by self or this frame, for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = (m.msg_len as usize).min(MAX_DATAGRAM);
            self.arrived_ns[i] = arrival_stamp(&m.msg_hdr).unwrap_or(0);
        }
        Ok(n)
    }

    /// When datagram `i` of the last call reached the kernel, in ns since the Unix epoch, if
    /// the socket stamps arrivals ([`enable_arrival_stamps`]).
    pub fn arrived_ns(&self, i: usize) -> Option<u64> {
        self.arrived_ns.get(i).copied().filter(|t| *t != 0)
    }

    /// Datagram `i` of the last call: its sender and bytes.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let from = from_sockaddr(self.addrs.get(i)?)?;
        let start = i * MAX_DATAGRAM;
        let data = self.data.get(start..start + *self.lens.get(i)?)?;
        Some((from, data))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received header, in ns since the Unix epoch.
fn arrival_stamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: `h` is a header recvmmsg filled in: msg_control/msg_controllen describe the
    // control messages it wrote into our buffer, which the CMSG macros walk within bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let ns = u64::try_from(ts.tv_sec).ok()? * 1_000_000_000
                    + u64::try_from(ts.tv_nsec).ok()?;
                return Some(ns);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_sockaddr(a: &SocketAddr, s: &mut libc::sockaddr_storage) -> u32 {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for a sockaddr_in.
            let out: &mut libc::sockaddr_in =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = v4.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large enough and aligned for a sockaddr_in6.
            let out: &mut libc::sockaddr_in6 =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_flowinfo = v6.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            out.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

/// A datagram to send: where to, and its bytes.
pub trait Datagram {
    fn to(&self) -> SocketAddr;
    fn bytes(&self) -> &[u8];
}

impl Datagram for (SocketAddr, &[u8]) {
    fn to(&self) -> SocketAddr {
        self.0
    }
    fn bytes(&self) -> &[u8] {
        self.1
    }
}

impl Datagram for str0m::net::Transmit {
    fn to(&self) -> SocketAddr {
        self.destination
    }
    fn bytes(&self) -> &[u8] {
        &self.contents
    }
}

/// What one [`SendBatch::send`] handed to the kernel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub bytes: u64,
}

/// Headers for `sendmmsg`, kept between calls: only the slots a call uses are written (no
/// zeroing of all [`BATCH`] per call, no allocation).
pub struct SendBatch {
    addrs: [libc::sockaddr_storage; BATCH],
    iov: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
}

// SAFETY: the raw pointers in the headers are scratch: every `send` rewrites those it uses
// before the call and nothing reads them afterwards, so moving the batch to another thread
// (the media thread it is built for) cannot leave a dangling use.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new() -> Box<SendBatch> {
        Box::new(SendBatch {
            // SAFETY: plain data, all zeroes is valid for each.
            addrs: unsafe { zeroed() },
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH],
            // SAFETY: plain data, zeroed is a valid empty header.
            msgs: unsafe { zeroed() },
        })
    }

    /// Sends `items` with as few `sendmmsg` calls as possible. A datagram the kernel refuses
    /// (full buffer, unreachable) is dropped, like the network would; returns how many were
    /// sent.
    pub fn send<D: Datagram>(&mut self, sock: &impl AsRawFd, items: &[D]) -> Sent {
        let mut sent = Sent::default();
        for chunk in items.chunks(BATCH) {
            for (i, d) in chunk.iter().enumerate() {
                let len = to_sockaddr(&d.to(), &mut self.addrs[i]);
                let data = d.bytes();
                self.iov[i].iov_base = data.as_ptr() as *mut libc::c_void;
                self.iov[i].iov_len = data.len();
                let h = &mut self.msgs[i].msg_hdr;
                h.msg_iov = &mut self.iov[i];
                h.msg_iovlen = 1;
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = len;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            let mut off = 0;
            while off < chunk.len() {
                // SAFETY: headers off..len point at live buffers (borrowed from `items`) and
                // addresses (in self) for the duration of the call.
                let n = unsafe {
                    libc::sendmmsg(
                        sock.as_raw_fd(),
                        self.msgs.as_mut_ptr().add(off),
                        (chunk.len() - off) as u32,
                        libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
                    )
                };
                if n <= 0 {
                    // The first datagram failed: skip it (dropped) and go on with the rest.
                    off += 1;
                } else {
                    let n = n as usize;
                    // The kernel set each sent header's `msg_len` to the bytes it took.
                    sent.bytes += self.msgs[off..off + n]
                        .iter()
                        .map(|m| u64::from(m.msg_len))
                        .sum::<u64>();
                    off += n;
                    sent.datagrams += n;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_its_senders() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let items: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, &p[..])).collect();
        let sent = SendBatch::new().send(&tx, &items);
        assert_eq!(sent.datagrams, 40);
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        assert_eq!(sent.bytes, bytes as u64);
        let mut b = RecvBatch::new();
        let mut got = vec![];
        while let Ok(n) = b.recv(&rx) {
            for i in 0..n {
                let (from, data) = b.get(i).expect("datagram");
                assert_eq!(from, tx.local_addr().expect("addr"));
                got.push(data.to_vec());
            }
        }
        assert_eq!(got, payloads);
    }
}
