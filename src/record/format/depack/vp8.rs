//! VP8 (RFC 7741): the payload descriptor (X, then I/L/T/K extensions) is stripped; S = 1 with
//! partition id 0 starts a frame, which is a keyframe when the P bit of the VP8 payload header
//! (the first byte of the frame) is 0. A keyframe's header carries the dimensions.

use super::{byte, Error, Mark, Params};

pub(super) fn packet(p: &[u8], data: &mut Vec<u8>, params: &mut Params) -> Result<Mark, Error> {
    let b0 = byte(p, 0)?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let ext = byte(p, i)?;
        i += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M).
            i += if byte(p, i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    let body = p.get(i..).ok_or(Error::Truncated)?;
    let first = *body.first().ok_or(Error::Truncated)?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let keyframe = start && first & 0x01 == 0;
    if keyframe {
        if let Some((w, h)) = dimensions(body) {
            params.width = w;
            params.height = h;
        }
    }
    data.extend_from_slice(body);
    Ok(Mark { start, keyframe })
}

/// A keyframe's width and height: 3-byte frame tag, start code 9d 01 2a, 14-bit sizes.
fn dimensions(frame: &[u8]) -> Option<(u32, u32)> {
    let h = frame.get(3..10)?;
    if h[..3] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[3], h[4]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[5], h[6]]) & 0x3fff;
    (w > 0 && ht > 0).then_some((u32::from(w), u32::from(ht)))
}
