//! A bit reader over borrowed bytes (MSB first) for the codec headers we read: VP9's
//! uncompressed header, H.264's SPS (Exp-Golomb), AV1's sequence header. Every read returns
//! `None` past the end instead of panicking.

pub(super) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    pub(super) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    pub(super) fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(super) fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    /// Unsigned Exp-Golomb (H.264 `ue(v)`), at most 31 leading zeros.
    pub(super) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        let v = (1u64 << zeros) - 1 + u64::from(rest);
        u32::try_from(v).ok()
    }

    /// Signed Exp-Golomb (H.264 `se(v)`).
    pub(super) fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1 `uvlc()`.
    pub(super) fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return Some(u32::MAX);
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bits_and_exp_golomb() {
        // 1 | 010 (ue=1) | 011 (ue=2) | 00100 (ue=3) | 1
        let mut b = Bits::new(&[0b1010_0110, 0b0100_1000]);
        assert_eq!(b.bit(), Some(1));
        assert_eq!(b.ue(), Some(1));
        assert_eq!(b.ue(), Some(2));
        assert_eq!(b.ue(), Some(3));
        assert_eq!(b.bit(), Some(1));
        assert_eq!(b.bits(3), Some(0));
        assert_eq!(b.bit(), None);
        let mut z = Bits::new(&[0; 8]);
        assert_eq!(z.ue(), None);
        assert_eq!(Bits::new(&[0x40]).se(), Some(1));
        assert_eq!(Bits::new(&[0x60]).se(), Some(-1));
        assert_eq!(Bits::new(&[0xff; 8]).bits(33), None);
    }
}
