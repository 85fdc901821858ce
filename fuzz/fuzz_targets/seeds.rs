//! Seed inputs: with `CONFAB_FUZZ_SEEDS=<dir>` set, a target's `init` writes its seeds (inputs
//! of the shape real clients send) into that directory before fuzzing starts (scripts/fuzz.sh).

#![allow(dead_code)]

/// Writes `seeds` as `seed-<n>` files into `$CONFAB_FUZZ_SEEDS`, if it is set.
pub fn write(seeds: &[Vec<u8>]) {
    let Some(dir) = std::env::var_os("CONFAB_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("seeds: cannot create {}: {e}", dir.display());
        return;
    }
    for (n, seed) in seeds.iter().enumerate() {
        let path = dir.join(format!("seed-{n}"));
        if let Err(e) = std::fs::write(&path, seed) {
            eprintln!("seeds: cannot write {}: {e}", path.display());
        }
    }
}
