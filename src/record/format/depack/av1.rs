//! AV1 (the AOM "RTP Payload Format for AV1"): the aggregation header (Z, Y, W, N) and OBU
//! elements (LEB128 lengths, the last one without when W > 0), OBUs fragmented across packets
//! (Z: the first element continues the previous packet's last, Y: the last continues in the
//! next). Written out in the low-overhead bitstream format: every OBU with
//! `obu_has_size_field` set, temporal delimiters (and tile lists, padding) dropped, as
//! Matroska's `V_AV1` wants. N (a new coded video sequence) marks a keyframe. The sequence
//! header gives the dimensions and the `av1C` CodecPrivate.

use super::bits::Bits;
use super::{byte, leb128, write_leb128, Error, Mark, Params, MAX_FRAME};

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;
const OBU_PADDING: u8 = 15;

#[derive(Default)]
pub(super) struct Av1 {
    /// An OBU whose rest comes in the next packet (Y).
    frag: Option<Vec<u8>>,
}

impl Av1 {
    pub(super) fn abort(&mut self) {
        self.frag = None;
    }

    pub(super) fn packet(
        &mut self,
        p: &[u8],
        data: &mut Vec<u8>,
        params: &mut Params,
    ) -> Result<Mark, Error> {
        let agg = byte(p, 0)?;
        let (z, y, w, n) = (
            agg & 0x80 != 0,
            agg & 0x40 != 0,
            usize::from((agg >> 4) & 0x03),
            agg & 0x08 != 0,
        );
        if !z && self.frag.take().is_some() {
            return Err(Error::Malformed("AV1 fragment not continued"));
        }
        let mut i = 1;
        let mut count = 0;
        while i < p.len() {
            count += 1;
            let len = if w != 0 && count == w {
                p.len() - i
            } else {
                let (len, k) = leb128(p.get(i..).ok_or(Error::Truncated)?)?;
                i += k;
                len
            };
            let end = i.checked_add(len).ok_or(Error::Truncated)?;
            let el = p.get(i..end).ok_or(Error::Truncated)?;
            i = end;
            let last = i >= p.len();
            let obu = if count == 1 && z {
                let mut f = self
                    .frag
                    .take()
                    .ok_or(Error::Malformed("AV1 continuation without its start"))?;
                if f.len() + el.len() > MAX_FRAME {
                    return Err(Error::TooLarge);
                }
                f.extend_from_slice(el);
                f
            } else {
                el.to_vec()
            };
            if last && y {
                self.frag = Some(obu);
            } else {
                emit(&obu, data, params)?;
            }
        }
        if count == 0 || (w != 0 && count != w) {
            return Err(Error::Malformed("AV1 OBU element count"));
        }
        Ok(Mark {
            start: !z,
            keyframe: n,
        })
    }

    pub(super) fn finish(&mut self) -> Result<(), Error> {
        match self.frag.take() {
            Some(_) => Err(Error::Malformed("AV1 temporal unit ended inside an OBU")),
            None => Ok(()),
        }
    }
}

/// One whole OBU as sent (size field optional) → written with its size field.
fn emit(obu: &[u8], data: &mut Vec<u8>, params: &mut Params) -> Result<(), Error> {
    let h = byte(obu, 0)?;
    if h & 0x80 != 0 {
        return Err(Error::Malformed("AV1 forbidden bit"));
    }
    let typ = (h >> 3) & 0x0f;
    let head = if h & 0x04 != 0 { 2 } else { 1 };
    let header = obu.get(..head).ok_or(Error::Truncated)?;
    let rest = obu.get(head..).ok_or(Error::Truncated)?;
    let payload = if h & 0x02 != 0 {
        let (len, k) = leb128(rest)?;
        rest.get(k..k.checked_add(len).ok_or(Error::Truncated)?)
            .ok_or(Error::Truncated)?
    } else {
        rest
    };
    if matches!(typ, OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING) {
        return Ok(());
    }
    let start = data.len();
    data.push(h | 0x02);
    data.extend_from_slice(&header[1..]);
    write_leb128(data, payload.len());
    data.extend_from_slice(payload);
    if typ == OBU_SEQUENCE_HEADER {
        if let Some(seq) = sequence_header(payload) {
            params.width = seq.width;
            params.height = seq.height;
            params.codec_private = Some(av1c(&seq, data.get(start..).unwrap_or_default()));
        }
    }
    Ok(())
}

struct Sequence {
    profile: u8,
    level: u8,
    tier: u8,
    width: u32,
    height: u32,
}

/// `AV1CodecConfigurationRecord`: the sequence header's profile, level and tier, then the
/// sequence header OBU itself. The colour fields are not parsed: they say 8-bit 4:2:0 (what
/// WebRTC sends); decoders read the real ones from the OBU.
fn av1c(seq: &Sequence, obu: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x81,
        (seq.profile << 5) | seq.level,
        (seq.tier << 7) | 0x0c,
        0,
    ];
    v.extend_from_slice(obu);
    v
}

/// The start of a sequence header OBU's payload, up to the maximum frame size.
fn sequence_header(p: &[u8]) -> Option<Sequence> {
    let mut r = Bits::new(p);
    let profile = r.bits(3)? as u8;
    r.bit()?; // still_picture
    let reduced = r.flag()?;
    let (mut level, mut tier) = (0, 0);
    if reduced {
        level = r.bits(5)? as u8;
    } else {
        let mut decoder_model = false;
        let mut delay_len = 0;
        if r.flag()? {
            r.bits(32)?;
            r.bits(32)?; // num_units_in_display_tick, time_scale
            if r.flag()? {
                r.uvlc()?;
            }
            decoder_model = r.flag()?;
            if decoder_model {
                delay_len = r.bits(5)? + 1;
                r.bits(32)?;
                r.bits(10)?; // buffer_removal_time_length, frame_presentation_time_length
            }
        }
        let display_delay = r.flag()?;
        let points = r.bits(5)? + 1;
        for k in 0..points {
            r.bits(12)?; // operating_point_idc
            let lvl = r.bits(5)? as u8;
            let t = if lvl > 7 { r.bit()? as u8 } else { 0 };
            if decoder_model && r.flag()? {
                r.bits(delay_len)?;
                r.bits(delay_len)?;
                r.bit()?;
            }
            if display_delay && r.flag()? {
                r.bits(4)?;
            }
            if k == 0 {
                (level, tier) = (lvl, t);
            }
        }
    }
    let wbits = r.bits(4)? + 1;
    let hbits = r.bits(4)? + 1;
    let width = r.bits(wbits)?.checked_add(1)?;
    let height = r.bits(hbits)?.checked_add(1)?;
    Some(Sequence {
        profile: profile & 0x07,
        level: level & 0x1f,
        tier: tier & 1,
        width,
        height,
    })
}
