//! relay.toml: parsing and validation of arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = jet_relay::relay::Config::from_toml(text) {
        // What validated stays valid.
        assert!(config.validate().is_ok(), "{config:?}");
    }
});
