//! H.264 (RFC 6184, packetization modes 0 and 1): single NAL units, STAP-A and FU-A become AVCC
//! NAL units (4-byte big-endian length + NAL) for Matroska's `V_MPEG4/ISO/AVC`. SPS and PPS are
//! kept in-band and also collected for the `avcC` CodecPrivate; the SPS gives the dimensions.
//! A keyframe is an access unit with an IDR slice or an SPS.

use super::bits::Bits;
use super::{byte, Error, Mark, Params};

/// Parameter sets larger than this are refused (real ones are tens of bytes).
const MAX_PARAM_SET: usize = 1024;

#[derive(Default)]
pub(super) struct H264 {
    /// The FU-A being reassembled: where its length prefix is in the frame's data.
    fu_at: Option<usize>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl H264 {
    pub(super) fn abort(&mut self) {
        self.fu_at = None;
    }

    pub(super) fn packet(
        &mut self,
        p: &[u8],
        data: &mut Vec<u8>,
        params: &mut Params,
    ) -> Result<Mark, Error> {
        let b0 = byte(p, 0)?;
        if b0 & 0x80 != 0 {
            return Err(Error::Malformed("H.264 forbidden bit"));
        }
        match b0 & 0x1f {
            1..=23 => {
                self.no_open_fu()?;
                let key = self.nal(p, data, params)?;
                Ok(Mark {
                    start: true,
                    keyframe: key,
                })
            }
            24 => {
                self.no_open_fu()?;
                let mut i = 1;
                let mut key = false;
                while i < p.len() {
                    let size = usize::from(u16::from_be_bytes([byte(p, i)?, byte(p, i + 1)?]));
                    i += 2;
                    let nal = p.get(i..i + size).ok_or(Error::Truncated)?;
                    i += size;
                    key |= self.nal(nal, data, params)?;
                }
                if i == 1 {
                    return Err(Error::Truncated);
                }
                Ok(Mark {
                    start: true,
                    keyframe: key,
                })
            }
            28 => self.fu_a(b0, p, data, params),
            0 => Err(Error::Malformed("H.264 NAL type 0")),
            _ => Err(Error::Unsupported("H.264 STAP-B, MTAP or FU-B")),
        }
    }

    fn no_open_fu(&mut self) -> Result<(), Error> {
        match self.fu_at.take() {
            Some(_) => Err(Error::Malformed("H.264 FU-A not ended")),
            None => Ok(()),
        }
    }

    fn fu_a(
        &mut self,
        b0: u8,
        p: &[u8],
        data: &mut Vec<u8>,
        params: &mut Params,
    ) -> Result<Mark, Error> {
        let fu = byte(p, 1)?;
        let (start, end, typ) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x1f);
        if typ == 0 || typ >= 24 {
            return Err(Error::Malformed("H.264 FU-A type"));
        }
        let rest = p.get(2..).ok_or(Error::Truncated)?;
        if start {
            self.no_open_fu()?;
            self.fu_at = Some(data.len());
            data.extend_from_slice(&[0; 4]);
            data.push((b0 & 0xe0) | typ);
        } else if self.fu_at.is_none() {
            return Err(Error::Malformed("H.264 FU-A without its start"));
        }
        data.extend_from_slice(rest);
        let mut key = start && typ == 5;
        if end {
            let at = self
                .fu_at
                .take()
                .ok_or(Error::Malformed("H.264 FU-A without its start"))?;
            let nal = data.get(at + 4..).ok_or(Error::Truncated)?;
            let len = u32::try_from(nal.len()).map_err(|_| Error::TooLarge)?;
            key |= self.parameter_set(typ, nal, params);
            data.get_mut(at..at + 4)
                .ok_or(Error::Truncated)?
                .copy_from_slice(&len.to_be_bytes());
        }
        Ok(Mark {
            start,
            keyframe: key,
        })
    }

    /// One whole NAL unit: appended length-prefixed; whether it makes the frame a keyframe.
    fn nal(&mut self, nal: &[u8], data: &mut Vec<u8>, params: &mut Params) -> Result<bool, Error> {
        let h = byte(nal, 0)?;
        let typ = h & 0x1f;
        if h & 0x80 != 0 || typ == 0 || typ >= 24 {
            return Err(Error::Malformed("H.264 aggregated NAL header"));
        }
        let len = u32::try_from(nal.len()).map_err(|_| Error::TooLarge)?;
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(nal);
        Ok(typ == 5 || self.parameter_set(typ, nal, params))
    }

    /// Keeps an SPS (7) or PPS (8); true for an SPS.
    fn parameter_set(&mut self, typ: u8, nal: &[u8], params: &mut Params) -> bool {
        if nal.len() > MAX_PARAM_SET {
            return typ == 7;
        }
        match typ {
            7 if nal.len() >= 4 => {
                if let Some((w, h)) = sps_dimensions(nal) {
                    params.width = w;
                    params.height = h;
                }
                self.sps = Some(nal.to_vec());
            }
            8 => self.pps = Some(nal.to_vec()),
            _ => return false,
        }
        if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            params.codec_private = Some(avcc(sps, pps));
        }
        typ == 7
    }

    pub(super) fn finish(&mut self, _params: &mut Params) -> Result<(), Error> {
        match self.fu_at.take() {
            Some(_) => Err(Error::Malformed("H.264 frame ended inside an FU-A")),
            None => Ok(()),
        }
    }
}

/// `AVCDecoderConfigurationRecord` (ISO 14496-15) with one SPS and one PPS, 4-byte lengths.
pub(super) fn avcc(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    v.extend_from_slice(pps);
    v
}

/// Width and height from an SPS NAL unit (with its header), cropping applied.
fn sps_dimensions(nal: &[u8]) -> Option<(u32, u32)> {
    // Emulation prevention: 00 00 03 → 00 00.
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits::new(&rbsp);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    let mut separate = false;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma = r.ue()?;
        if chroma == 3 {
            separate = r.flag()?;
        }
        r.ue()?;
        r.ue()?; // bit depths
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.flag()? {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if r.flag()? {
                    scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(256) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let w_mbs = u64::from(r.ue()?) + 1;
    let h_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4];
    if r.flag()? {
        for c in &mut crop {
            *c = u64::from(r.ue()?);
        }
    }
    let (cx, cy) = match (chroma, separate) {
        (1, false) => (2, 2),
        (2, false) => (2, 1),
        _ => (1, 1),
    };
    let fields = if frame_mbs_only { 1 } else { 2 };
    let w = (w_mbs * 16).checked_sub((crop[0] + crop[1]) * cx)?;
    let h = (h_units * 16 * fields).checked_sub((crop[2] + crop[3]) * cy * fields)?;
    let ok = |v: u64| (1..=16384).contains(&v);
    (ok(w) && ok(h)).then_some((w as u32, h as u32))
}

fn scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}
