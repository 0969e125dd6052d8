//! The `--web.config.file` YAML (exporter-toolkit format) over arbitrary text, including TLS.
//! It runs in a scratch directory holding `cert.pem`, `key.pem` and `ca.pem` (a throw-away
//! self-signed certificate made at start), so `cert_file: cert.pem` exercises the whole TLS
//! setup; an input naming any other path (a `/` or a `\` escape) is skipped, so no input makes
//! it read /dev/zero or a FIFO.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::web_config::WebConfig;

static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

fn scratch() {
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a self-signed certificate");
        let cert = made.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert.pem");
        std::fs::write(dir.path().join("ca.pem"), &cert).expect("ca.pem");
        std::fs::write(dir.path().join("key.pem"), made.key_pair.serialize_pem()).expect("key.pem");
        std::env::set_current_dir(dir.path()).expect("into the scratch directory");
        dir
    });
}

fuzz_target!(|data: &[u8]| {
    scratch();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains(['/', '\\']) {
        return;
    }
    let _ = WebConfig::from_text(text, "web.yml");
});
