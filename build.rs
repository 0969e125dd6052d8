//! Bakes the build facts into the binary, for `--version` and
//! `office365_activations_exporter_build_info` (src/build_info.rs reads them):
//!
//! - revision: `O365_EXPORTER_REVISION`, else `git rev-parse --short=12 HEAD`, else "unknown";
//! - branch: `O365_EXPORTER_BRANCH`, else `git rev-parse --abbrev-ref HEAD` ("HEAD" when
//!   detached, as Prometheus's own builds say), else "unknown";
//! - build date: `SOURCE_DATE_EPOCH` (reproducible builds: scripts/release sets it to the commit
//!   time), else the time this script ran, as `YYYYMMDD-HH:MM:SS` UTC like Prometheus's;
//! - rustc version (`$RUSTC -V`) and target triple.
//!
//! The script reruns only when one of those variables, HEAD or the checked-out branch's ref
//! changes, so an edit-compile cycle does not rebuild the crate for a new build date.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    for variable in [
        "O365_EXPORTER_REVISION",
        "O365_EXPORTER_BRANCH",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    let git_dir = git(&["rev-parse", "--absolute-git-dir"]);
    if let Some(git_dir) = &git_dir {
        watch_git(Path::new(git_dir));
    } else {
        // No git (a source tarball, the Dockerfile's build context): nothing else can change.
        println!("cargo:rerun-if-changed=build.rs");
    }
    let revision = from_env("O365_EXPORTER_REVISION")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let branch = from_env("O365_EXPORTER_BRANCH")
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let epoch = from_env("SOURCE_DATE_EPOCH")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rust_version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());

    println!("cargo:rustc-env=O365_EXPORTER_REVISION={revision}");
    println!("cargo:rustc-env=O365_EXPORTER_BRANCH={branch}");
    println!(
        "cargo:rustc-env=O365_EXPORTER_BUILD_DATE={}",
        build_date(epoch)
    );
    println!("cargo:rustc-env=O365_EXPORTER_RUST_VERSION={rust_version}");
    println!("cargo:rustc-env=O365_EXPORTER_TARGET={target}");
}

/// A non-empty environment variable.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The trimmed output of a successful `git` command.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// Reruns when HEAD moves (checkout, commit): HEAD itself, the branch's ref file and the packed
/// refs. A worktree has its own HEAD but shares the refs with the main checkout.
fn watch_git(git_dir: &Path) {
    let common: PathBuf = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .map_or_else(|| git_dir.to_owned(), PathBuf::from);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    let packed = common.join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        // A packed branch gets its loose ref file at the next commit: watch its folder then.
        let loose = common.join(reference);
        let watched = match loose.parent() {
            Some(folder) if !loose.exists() => folder.to_owned(),
            _ => loose,
        };
        println!("cargo:rerun-if-changed={}", watched.display());
    }
}

/// Unix time as `YYYYMMDD-HH:MM:SS` in UTC (Prometheus's build date format).
fn build_date(epoch: u64) -> String {
    let (days, seconds) = (epoch / 86_400, epoch % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (no dates before 1970 here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}
