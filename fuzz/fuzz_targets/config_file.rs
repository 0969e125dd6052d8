//! The `--config.file` YAML over arbitrary text: deserialized and validated as far as it can be
//! without reading the files it names. Never a panic, a hang or unbounded memory (YAML aliases,
//! deep nesting, durations, URLs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::config::check_file_text;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(tenants) = check_file_text(text) {
            assert!(tenants > 0);
        }
    }
});
