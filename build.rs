//! Bakes the git revision into the binary for `office365_activations_exporter_build_info`.

use std::process::Command;

fn main() {
    let revision = std::env::var("O365_EXPORTER_REVISION").ok().or_else(|| {
        let output = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    });
    if let Some(revision) = revision.filter(|r| !r.is_empty()) {
        println!("cargo:rustc-env=O365_EXPORTER_REVISION={revision}");
    }
    println!("cargo:rerun-if-env-changed=O365_EXPORTER_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
