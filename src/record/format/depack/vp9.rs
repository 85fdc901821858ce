//! VP9 (RFC 9628): the payload descriptor (I/P/L/F/B/E/V, flexible or not, the scalability
//! structure) is stripped. B starts a layer frame, and with spatial layers (LiveKit's browsers
//! send L3T3 SVC) one picture carries several: they are written as one VP9 superframe, the
//! layer frames in order followed by the superframe index, which is what decoders expect. A
//! keyframe is P = 0 at the start of spatial layer 0 whose uncompressed header says
//! `KEY_FRAME`. Dimensions: the scalability structure's largest layer when sent, else the
//! keyframe's header (its own layer's size).

use super::bits::Bits;
use super::{byte, Error, Mark, Params};

/// A superframe holds at most 8 frames.
const MAX_LAYER_FRAMES: usize = 8;

#[derive(Default)]
pub(super) struct Vp9 {
    /// Where each layer frame of the current picture starts in its data.
    starts: Vec<usize>,
}

impl Vp9 {
    pub(super) fn abort(&mut self) {
        self.starts.clear();
    }

    pub(super) fn packet(
        &mut self,
        p: &[u8],
        data: &mut Vec<u8>,
        params: &mut Params,
    ) -> Result<Mark, Error> {
        let b0 = byte(p, 0)?;
        let (pic_id, inter, layer, flexible, begin, ss) = (
            b0 & 0x80 != 0,
            b0 & 0x40 != 0,
            b0 & 0x20 != 0,
            b0 & 0x10 != 0,
            b0 & 0x08 != 0,
            b0 & 0x02 != 0,
        );
        let mut i = 1;
        if pic_id {
            i += if byte(p, i)? & 0x80 != 0 { 2 } else { 1 };
        }
        let mut sid = 0;
        if layer {
            sid = (byte(p, i)? >> 1) & 0x07;
            i += if flexible { 1 } else { 2 };
        }
        if flexible && inter {
            let mut n = 0;
            loop {
                let d = byte(p, i)?;
                i += 1;
                n += 1;
                if d & 0x01 == 0 {
                    break;
                }
                if n == 3 {
                    return Err(Error::Malformed("VP9 more than 3 P_DIFF"));
                }
            }
        }
        if ss {
            i = scalability(p, i, params)?;
        }
        let body = p.get(i..).ok_or(Error::Truncated)?;
        if begin {
            if self.starts.len() == MAX_LAYER_FRAMES {
                return Err(Error::Malformed("VP9 more than 8 frames in a picture"));
            }
            self.starts.push(data.len());
        }
        let mut keyframe = false;
        if begin && !inter && sid == 0 {
            if let Some((key, dims)) = header(body) {
                keyframe = key;
                // The scalability structure's size wins: it names the largest layer.
                if let (Some((w, h)), 0) = (dims, params.width) {
                    params.width = w;
                    params.height = h;
                }
            }
        }
        data.extend_from_slice(body);
        Ok(Mark {
            start: begin,
            keyframe,
        })
    }

    /// The picture is complete: with more than one layer frame, append the superframe index.
    pub(super) fn finish(&mut self, data: &mut Vec<u8>) -> Result<(), Error> {
        let starts = std::mem::take(&mut self.starts);
        if starts.len() < 2 {
            return Ok(());
        }
        let mut sizes = Vec::with_capacity(starts.len());
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(data.len());
            let size = end
                .checked_sub(s)
                .ok_or(Error::Malformed("VP9 layer order"))?;
            if size == 0 {
                return Err(Error::Malformed("VP9 empty layer frame"));
            }
            sizes.push(u32::try_from(size).map_err(|_| Error::TooLarge)?);
        }
        let max = sizes.iter().copied().max().unwrap_or(0);
        let mag: usize = match max {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xff_ffff => 3,
            _ => 4,
        };
        let marker = 0xc0 | (((mag - 1) as u8) << 3) | ((sizes.len() - 1) as u8);
        data.push(marker);
        for s in sizes {
            data.extend_from_slice(&s.to_le_bytes()[..mag]);
        }
        data.push(marker);
        Ok(())
    }
}

/// The scalability structure (V): N_S, Y (sizes), G (picture group); returns where it ends.
fn scalability(p: &[u8], mut i: usize, params: &mut Params) -> Result<usize, Error> {
    let b = byte(p, i)?;
    i += 1;
    let layers = usize::from(b >> 5) + 1;
    if b & 0x10 != 0 {
        for _ in 0..layers {
            let w = u16::from_be_bytes([byte(p, i)?, byte(p, i + 1)?]);
            let h = u16::from_be_bytes([byte(p, i + 2)?, byte(p, i + 3)?]);
            i += 4;
            if w > 0 && h > 0 && u32::from(w) >= params.width {
                params.width = u32::from(w);
                params.height = u32::from(h);
            }
        }
    }
    if b & 0x08 != 0 {
        let groups = byte(p, i)?;
        i += 1;
        for _ in 0..groups {
            let g = byte(p, i)?;
            i += 1 + usize::from((g >> 2) & 0x03);
        }
    }
    if i > p.len() {
        return Err(Error::Truncated);
    }
    Ok(i)
}

/// The uncompressed header: whether it is a keyframe, and then its size.
fn header(frame: &[u8]) -> Option<(bool, Option<(u32, u32)>)> {
    let mut r = Bits::new(frame);
    if r.bits(2)? != 2 {
        return None;
    }
    let profile = r.bit()? | (r.bit()? << 1);
    if profile == 3 {
        r.bit()?;
    }
    if r.flag()? {
        return Some((false, None)); // show_existing_frame
    }
    let key = r.bit()? == 0;
    r.bits(2)?; // show_frame, error_resilient_mode
    if !key {
        return Some((false, None));
    }
    if r.bits(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        r.bit()?;
    }
    let color_space = r.bits(3)?;
    let odd_profile = profile == 1 || profile == 3;
    if color_space != 7 {
        r.bit()?;
        if odd_profile {
            r.bits(3)?;
        }
    } else if odd_profile {
        r.bit()?;
    }
    let w = r.bits(16)? + 1;
    let h = r.bits(16)? + 1;
    Some((true, Some((w, h))))
}
