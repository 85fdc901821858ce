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
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0u8; BATCH * MAX_DATAGRAM],
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
            addrs: unsafe { zeroed() },
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
        for (len, m) in self.lens.iter_mut().zip(msgs.iter()).take(n) {
            *len = (m.msg_len as usize).min(MAX_DATAGRAM);
        }
        Ok(n)
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

/// Sends `items` (destination, bytes) with as few `sendmmsg` calls as possible. A datagram the
/// kernel refuses (full buffer, unreachable) is dropped, like the network would; returns how
/// many were sent.
pub fn send(sock: &impl AsRawFd, items: &[(SocketAddr, &[u8])]) -> usize {
    let mut sent = 0;
    for chunk in items.chunks(BATCH) {
        // SAFETY: plain data, zeroed is valid.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: plain data, zeroed is valid.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (to, data)) in chunk.iter().enumerate() {
            let len = to_sockaddr(to, &mut addrs[i]);
            iov[i].iov_base = data.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = data.len();
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = len;
        }
        let mut off = 0;
        while off < chunk.len() {
            // SAFETY: headers off..len point at live buffers and addresses for the call.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs.as_mut_ptr().add(off),
                    (chunk.len() - off) as u32,
                    libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
                )
            };
            if n <= 0 {
                // The first datagram failed: skip it (dropped) and go on with the rest.
                off += 1;
            } else {
                off += n as usize;
                sent += n as usize;
            }
        }
    }
    sent
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
        assert_eq!(send(&tx, &items), 40);
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
