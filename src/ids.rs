//! LiveKit-style ids (`RM_…`, `PA_…`, `TR_…`, `EV_…`, `AJ_…`), made in one place for the SFU,
//! the event bus and the agent dispatcher.

/// LiveKit's 2-letter-prefixed ids: `RM_`, `PA_`, `TR_` + 12 random base62 characters.
pub fn new_sid(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut raw = [0u8; 12];
    // An all-zero id is still unique enough within one process (ids are also checked for reuse).
    let _ = getrandom::fill(&mut raw);
    let mut s = String::with_capacity(prefix.len() + 12);
    s.push_str(prefix);
    s.extend(
        raw.iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char),
    );
    s
}
