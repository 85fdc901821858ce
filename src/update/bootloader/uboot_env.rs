//! The U-Boot environment as U-Boot stores it and as `env import -c` / `env export -c`,
//! `mkenvimage` and `fw_printenv` read and write it: a CRC32 (little-endian) of the data, then
//! `key=value\0` entries ended by an empty one, padded to the environment's fixed size (with
//! `\0` or `0xff`). Pure code on bytes; `uboot.rs` keeps the files.
//!
//! Power cuts: U-Boot refuses a copy whose CRC does not match (and boots on its defaults), so a
//! torn write is detected, never half-read. `uboot.rs` keeps two copies and a sequence number
//! in each, writing the older copy, so one good copy always survives.

use std::collections::BTreeMap;

/// The environment size the boot script exports with (`env export -c -s 0x4000`) and this
/// backend writes: U-Boot's default for the Raspberry Pi.
pub const DEFAULT_SIZE: usize = 0x4000;

/// The variable holding a copy's sequence number (the newer valid copy wins).
pub const SEQ: &str = "CONFAB_ENV_SEQ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0} bytes: shorter than a CRC and one entry")]
    Short(usize),
    #[error(
        "CRC mismatch (stored {stored:08x}, computed {computed:08x}): a torn or foreign write"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("no end marker (an empty entry) within the environment")]
    Unterminated,
    #[error("entry {0:?} is not key=value")]
    Entry(String),
    #[error("the variables take {need} bytes, more than the environment's {size}")]
    TooBig { need: usize, size: usize },
    #[error("variable {0:?}: names are non-empty without '=' or NUL, values without NUL")]
    Name(String),
}

/// One environment: its variables, sorted (U-Boot's `env export` sorts too).
pub type Vars = BTreeMap<String, String>;

/// Reads an environment image (CRC checked).
pub fn parse(bytes: &[u8]) -> Result<Vars, EnvError> {
    if bytes.len() < 6 {
        return Err(EnvError::Short(bytes.len()));
    }
    let (crc, data) = bytes.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(EnvError::Crc { stored, computed });
    }
    let mut vars = Vars::new();
    let mut rest = data;
    loop {
        let Some(end) = rest.iter().position(|b| *b == 0) else {
            return Err(EnvError::Unterminated);
        };
        if end == 0 {
            return Ok(vars);
        }
        let entry = String::from_utf8_lossy(&rest[..end]).into_owned();
        let Some((k, v)) = entry.split_once('=') else {
            return Err(EnvError::Entry(entry));
        };
        if k.is_empty() {
            return Err(EnvError::Entry(entry));
        }
        vars.insert(k.to_string(), v.to_string());
        rest = &rest[end + 1..];
    }
}

/// Writes an environment image of `size` bytes (zero padded).
pub fn serialize(vars: &Vars, size: usize) -> Result<Vec<u8>, EnvError> {
    let mut data = Vec::with_capacity(size);
    for (k, v) in vars {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(EnvError::Name(k.clone()));
        }
        data.extend_from_slice(k.as_bytes());
        data.push(b'=');
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    // The end marker: an empty entry (a second NUL), inside the size.
    let need = 4 + data.len() + 1;
    if need > size {
        return Err(EnvError::TooBig { need, size });
    }
    data.resize(size - 4, 0);
    let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// A copy's sequence number (0 when absent or not a number).
pub fn seq(vars: &Vars) -> u64 {
    vars.get(SEQ).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_environment_round_trips_and_keeps_its_size() {
        let v = vars(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3"), ("empty", "")]);
        let image = serialize(&v, DEFAULT_SIZE).unwrap();
        assert_eq!(image.len(), DEFAULT_SIZE);
        assert_eq!(parse(&image).unwrap(), v);
        // The layout, byte for byte: CRC, sorted entries, the end marker, zeros.
        assert_eq!(&image[4..16], b"BOOT_A_LEFT=");
        let data = &image[4..];
        let text_end = data.windows(2).position(|w| w == [0, 0]).unwrap();
        assert_eq!(
            &data[..text_end + 1],
            b"BOOT_A_LEFT=3\0BOOT_ORDER=A B\0empty=\0"
        );
    }

    #[test]
    fn a_torn_or_foreign_image_is_refused() {
        let image = serialize(&vars(&[("a", "1")]), 64).unwrap();
        for cut in [0, 3, 5] {
            assert!(parse(&image[..cut]).is_err(), "{cut} bytes");
        }
        // A write cut short: the rest of the block still holds old bytes.
        let mut torn = image.clone();
        torn[4] = b'b';
        assert!(matches!(parse(&torn), Err(EnvError::Crc { .. })));
        assert!(matches!(parse(&[0xff; 64]), Err(EnvError::Crc { .. })));
        // Right CRC, no end marker or a broken entry.
        let data = vec![b'x'; 60];
        let mut bad = crc32fast::hash(&data).to_le_bytes().to_vec();
        bad.extend_from_slice(&data);
        assert_eq!(parse(&bad), Err(EnvError::Unterminated));
        let mut data = b"novalue\0\0".to_vec();
        data.resize(60, 0);
        let mut bad = crc32fast::hash(&data).to_le_bytes().to_vec();
        bad.extend_from_slice(&data);
        assert_eq!(parse(&bad), Err(EnvError::Entry("novalue".into())));
    }

    #[test]
    fn what_does_not_fit_or_cannot_be_stored_is_refused() {
        let big = vars(&[("k", &"v".repeat(100))]);
        assert_eq!(
            serialize(&big, 64),
            Err(EnvError::TooBig {
                need: 108,
                size: 64
            })
        );
        for bad in [
            vars(&[("", "x")]),
            vars(&[("a=b", "x")]),
            vars(&[("a", "x\0")]),
        ] {
            assert!(matches!(serialize(&bad, 64), Err(EnvError::Name(_))));
        }
    }
}
