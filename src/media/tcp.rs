//! ICE-TCP connections: RFC 4571 framing (each packet preceded by its length as 16 bits, big
//! endian) over a non-blocking stream, with bounded buffers both ways.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use tracing::debug;

/// A peer that sends more than this without completing a frame is cut off.
const MAX_READ_BUFFER: usize = 2 * (u16::MAX as usize + 2);
/// Output queued beyond this is dropped (like a full UDP send buffer).
const MAX_WRITE_BUFFER: usize = 4 << 20;

pub struct TcpConn {
    pub stream: TcpStream,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    rbuf: Vec<u8>,
    wbuf: VecDeque<u8>,
}

impl TcpConn {
    pub fn new(stream: TcpStream, local: SocketAddr, peer: SocketAddr) -> TcpConn {
        TcpConn {
            stream,
            local,
            peer,
            rbuf: Vec::new(),
            wbuf: VecDeque::new(),
        }
    }

    /// Reads what is available and appends complete frames to `out`. False when the
    /// connection is finished (closed by the peer, failed, or sent garbage).
    pub fn read_frames(&mut self, out: &mut Vec<Vec<u8>>) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.rbuf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    split_frames(&mut self.rbuf, out);
                    if self.rbuf.len() > MAX_READ_BUFFER {
                        debug!(peer = %self.peer, "ICE-TCP peer overflowed its buffer; closed");
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(peer = %self.peer, error = %e, "ICE-TCP read failed");
                    return false;
                }
            }
        }
    }

    pub fn send_frame(&mut self, data: &[u8]) {
        let Ok(len) = u16::try_from(data.len()) else {
            return;
        };
        if self.wbuf.len() + data.len() + 2 > MAX_WRITE_BUFFER {
            return;
        }
        self.wbuf.extend(len.to_be_bytes());
        self.wbuf.extend(data);
        self.write_pending();
    }

    /// Writes as much queued output as the socket takes. False when the connection failed.
    pub fn write_pending(&mut self) -> bool {
        while !self.wbuf.is_empty() {
            let (a, _) = self.wbuf.as_slices();
            match self.stream.write(a) {
                Ok(0) => return false,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Moves every complete `[len:u16][payload]` frame at the start of `buf` into `out`.
pub fn split_frames(buf: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    let mut at = 0;
    while let Some(head) = buf.get(at..at + 2) {
        let len = u16::from_be_bytes([head[0], head[1]]) as usize;
        let Some(payload) = buf.get(at + 2..at + 2 + len) else {
            break;
        };
        out.push(payload.to_vec());
        at += 2 + len;
    }
    buf.drain(..at);
}

#[cfg(test)]
mod tests {
    use super::split_frames;

    #[test]
    fn frames_split_across_reads_are_joined() {
        let mut buf = vec![0, 3, b'a', b'b'];
        let mut out = vec![];
        split_frames(&mut buf, &mut out);
        assert!(out.is_empty());
        buf.extend_from_slice(&[b'c', 0, 1, b'x', 0]);
        split_frames(&mut buf, &mut out);
        assert_eq!(out, vec![b"abc".to_vec(), b"x".to_vec()]);
        assert_eq!(buf, vec![0], "a partial length stays for the next read");
    }

    #[test]
    fn empty_frames_are_frames() {
        let mut buf = vec![0, 0, 0, 0];
        let mut out = vec![];
        split_frames(&mut buf, &mut out);
        assert_eq!(out.len(), 2);
        assert!(buf.is_empty());
    }
}
