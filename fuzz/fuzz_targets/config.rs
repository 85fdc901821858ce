//! Configuration files: `confab.toml` (every key, with the environment empty) and the
//! appliance's boot-partition `confab.toml`. A bad file must be an error naming the key.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod seeds;

fuzz_target!(init: seeds::write(&config_seeds()), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = confab::config::Env::new();
    let _ = confab::config::Config::from_layers(&[("fuzz.toml".into(), text.into())], &env);
    let _ = confab::appliance::BootConfig::parse(text);
});

/// The appliance's example `confab.toml` and a server configuration using every section.
fn config_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../image/confab.toml.example").to_vec(),
        include_bytes!("../seeds/confab.toml").to_vec(),
    ]
}
