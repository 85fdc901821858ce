//! The update manifest (a release's `manifest.json`, read before its signature is trusted to
//! mean anything) and the backup archive (a file the admin uploads): both untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod seeds;

fuzz_target!(init: seeds::write(&manifest_seeds()), |data: &[u8]| {
    let _ = confab::update::manifest::Manifest::parse(data);
    let _ = confab::backup::Manifest::parse(data);
    let _ = confab::backup::read(data);
});

/// An update manifest and a backup manifest of the shapes confab writes.
fn manifest_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../seeds/update-manifest.json").to_vec(),
        include_bytes!("../seeds/backup-manifest.json").to_vec(),
    ]
}
