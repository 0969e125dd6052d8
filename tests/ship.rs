//! The shipped artefacts, checked (issue 13: ship it the way Prometheus exporters ship).
//!
//! - `./scripts/release`, run once for every test here that needs it (one release build): the
//!   tarball in the Prometheus layout, unpacked, its binary's `--version` and demo `/metrics`;
//!   `dist/sha256sums.txt` verified by `sha256sum -c`.
//! - The .deb: lintian clean (every override justified and used); installed with `dpkg -i`,
//!   reinstalled over an edited conffile, removed with `dpkg -r` and purged with
//!   `dpkg --purge`, for real (needs root: skipped, saying so, otherwise); in between, the files,
//!   their owners and modes, the system user, the unit not enabled, `systemd-analyze verify`, the
//!   installed binary serving the demo as the service user; after the purge nothing left but the
//!   system user (Debian keeps them).
//! - The man page and the completions name every flag and command of `--help`; the packaged ones
//!   are byte for byte what the binary renders.
//! - `--version` in Prometheus's format, and build_info carrying the same values.
//! - `cargo deny check licenses bans` passes; NOTICE lists exactly the crates Cargo.lock builds.
//!
//! Tools: cargo-deb and cargo-deny (crates.io) and lintian (Debian), which scripts/test installs
//! when missing; a missing tool FAILS its test with the install step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use clap::Parser;
use common::{binary, listening_address};
use office365_activations_exporter::config::Cli;

const NAME: &str = "office365-activations-exporter";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const ETC: &str = "/etc/office365-activations-exporter";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn tool(name: &str, install: &str) -> PathBuf {
    on_path(name).unwrap_or_else(|| panic!("`{name}` is needed and is not on PATH: {install}"))
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` and returns its stdout; fails with both streams unless it succeeds.
fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn is_root() -> bool {
    // The owner of a file this process just created is its effective uid.
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

/// What `./scripts/release` built.
struct Release {
    tarball: PathBuf,
    deb: PathBuf,
    dist: PathBuf,
}

/// Runs `./scripts/release` once for the whole test binary.
fn release() -> &'static Release {
    static RELEASE: OnceLock<Release> = OnceLock::new();
    RELEASE.get_or_init(|| {
        tool(
            "cargo-deb",
            "cargo install --locked cargo-deb (scripts/test does it when it is missing)",
        );
        // Without what `cargo test` sets for this crate (see the helper).
        let mut command = Command::new(root().join("scripts/release"));
        common::without_cargo_test_env(&mut command);
        run_ok(command.current_dir(root()));
        let dist = root().join("dist");
        let release = Release {
            tarball: dist.join(format!("{NAME}-{VERSION}.linux-amd64.tar.gz")),
            deb: dist.join(format!("{NAME}_{VERSION}-1_amd64.deb")),
            dist,
        };
        for file in [&release.tarball, &release.deb] {
            assert!(
                file.is_file(),
                "scripts/release did not make {}",
                file.display()
            );
        }
        release
    })
}

/// The files of `dir` (relative paths, recursively).
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The repository files matching `dir/*.ext`, by file name.
fn repo_files(dir: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

/// What `binary` prints for `args`, with an empty environment.
fn generated(binary: &Path, args: &[&str]) -> String {
    run_ok(Command::new(binary).args(args).env_clear())
}

/// Starts `command` (the exporter, with --demo on a free loopback port appended) and returns
/// its /metrics.
async fn demo_metrics(mut command: tokio::process::Command) -> String {
    let mut child = command
        .args(["--demo", "--web.listen-address", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the exporter starts");
    let address = listening_address(&mut child).await;
    let body = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    child.kill().await.unwrap();
    body
}

/// The labels of the build_info sample in `metrics`.
fn build_info_labels(metrics: &str) -> BTreeMap<String, String> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("office365_activations_exporter_build_info{"))
        .unwrap_or_else(|| panic!("no build_info in:\n{metrics}"));
    let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
    labels
        .split("\",")
        .map(|pair| {
            let (name, value) = pair.split_once("=\"").unwrap();
            (name.to_owned(), value.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// `--version`'s values by name (`version`, `branch`, `revision`, `build date`, ...), checking
/// the Prometheus format on the way.
fn version_facts(output: &str) -> BTreeMap<String, String> {
    let mut lines = output.lines();
    let first = lines.next().unwrap_or_default();
    let rest = first
        .strip_prefix(&format!("{NAME}, version "))
        .unwrap_or_else(|| panic!("not Prometheus's first line: {first}"));
    let (version, details) = rest.split_once(" (").unwrap();
    let details = details.strip_suffix(')').unwrap();
    let mut facts = BTreeMap::from([("version".to_owned(), version.to_owned())]);
    for pair in details.split(", ") {
        let (name, value) = pair.split_once(": ").unwrap();
        facts.insert(name.to_owned(), value.to_owned());
    }
    for line in lines {
        assert!(
            line.starts_with("  "),
            "indented like Prometheus's: {line:?}"
        );
        let (name, value) = line.trim().split_once(':').unwrap();
        facts.insert(name.to_owned(), value.trim().to_owned());
    }
    facts
}

// ---------------------------------------------------------------------------------------------
// 1. The release tarball

#[tokio::test(flavor = "multi_thread")]
async fn release_tarball_has_the_prometheus_layout_and_its_binary_serves_the_demo() {
    let release = tokio::task::spawn_blocking(release).await.unwrap();

    // sha256sums.txt names both artefacts and verifies.
    let sums = std::fs::read_to_string(release.dist.join("sha256sums.txt")).unwrap();
    let named: BTreeSet<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let expected: BTreeSet<String> = [&release.tarball, &release.deb]
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        named,
        expected.iter().map(String::as_str).collect(),
        "{sums}"
    );
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "sha256sums.txt"])
            .current_dir(&release.dist),
    );

    // One top folder, holding exactly these files.
    let top = format!("{NAME}-{VERSION}.linux-amd64");
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&release.tarball)
            .arg("-C")
            .arg(dir.path()),
    );
    let tops: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(tops, [top.as_str()], "one top folder");
    let tree = dir.path().join(&top);
    let mut expected: BTreeSet<String> = [
        NAME,
        "LICENSE",
        "NOTICE",
        "README.md",
        "THIRD-PARTY-LICENSES",
        "config.example.yml",
        "prometheus.example.yml",
        "docs/runbook.md",
        "systemd/office365-activations-exporter.service",
        "systemd/office365-activations-exporter.env",
        "man/office365-activations-exporter.1",
        "completions/office365-activations-exporter",
        "completions/_office365-activations-exporter",
        "completions/office365-activations-exporter.fish",
    ]
    .map(str::to_owned)
    .into();
    for (from, to, ext) in [
        ("dashboards", "dashboards", ".json"),
        ("dashboards/provisioning", "dashboards/provisioning", ".yml"),
        ("prometheus/rules", "rules", ".yml"),
    ] {
        let names = repo_files(from, ext);
        assert!(!names.is_empty(), "{from}");
        for name in names {
            let packaged = format!("{to}/{name}");
            assert_eq!(
                std::fs::read(tree.join(&packaged)).ok(),
                std::fs::read(root().join(from).join(&name)).ok(),
                "{packaged} is {from}/{name}"
            );
            expected.insert(packaged);
        }
    }
    assert_eq!(files_under(&tree), expected);
    for (packaged, source) in [
        ("LICENSE", "LICENSE"),
        ("NOTICE", "NOTICE"),
        ("README.md", "README.md"),
        ("config.example.yml", "packaging/config.example.yml"),
        (
            "systemd/office365-activations-exporter.service",
            "packaging/systemd/office365-activations-exporter.service",
        ),
    ] {
        assert_eq!(
            std::fs::read_to_string(tree.join(packaged)).unwrap(),
            read(source),
            "{packaged}"
        );
    }
    let licences = std::fs::read_to_string(tree.join("THIRD-PARTY-LICENSES")).unwrap();
    for crate_line in read("NOTICE")
        .lines()
        .skip_while(|l| !l.ends_with("crates:"))
        .skip(2)
    {
        let mut fields = crate_line.split_whitespace();
        let (name, version) = (fields.next().unwrap(), fields.next().unwrap());
        assert!(
            licences.contains(&format!("\n{name} {version}: "))
                || licences.contains(&format!("  {name} {version} (")),
            "THIRD-PARTY-LICENSES has nothing of {name} {version}"
        );
    }

    // The binary runs from the folder: --version, the man page and completions it renders (the
    // ones packaged), the demo.
    let exporter = tree.join(NAME);
    assert_eq!(
        exporter.metadata().unwrap().permissions().mode() & 0o777,
        0o755
    );
    let facts = version_facts(&generated(&exporter, &["--version"]));
    assert_eq!(facts["version"], VERSION);
    let head = run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root()));
    if head.status.success() {
        assert_eq!(
            facts["revision"],
            text(&head.stdout).trim(),
            "the checkout's commit"
        );
    }
    assert_eq!(
        std::fs::read_to_string(tree.join("man/office365-activations-exporter.1")).unwrap(),
        generated(&exporter, &["man"])
    );
    for (file, shell) in [
        ("completions/office365-activations-exporter", "bash"),
        ("completions/_office365-activations-exporter", "zsh"),
        ("completions/office365-activations-exporter.fish", "fish"),
    ] {
        assert_eq!(
            std::fs::read_to_string(tree.join(file)).unwrap(),
            generated(&exporter, &["completion", shell]),
            "{file}"
        );
    }
    let metrics = demo_metrics(tokio::process::Command::new(&exporter)).await;
    assert!(
        metrics.contains("office365_activations_activated_users{tenant="),
        "{metrics}"
    );
    let labels = build_info_labels(&metrics);
    assert_eq!(labels["version"], VERSION);
    assert_eq!(labels["revision"], facts["revision"]);
}

// ---------------------------------------------------------------------------------------------
// 2. The Debian package

#[test]
fn debian_package_is_lintian_clean_and_every_override_is_justified_and_used() {
    let lintian = tool(
        "lintian",
        "apt-get install lintian (scripts/test does it when it is missing)",
    );
    let overrides = read("packaging/debian/lintian-overrides");
    let mut tags = Vec::new();
    let mut justified = false;
    for line in overrides.lines().map(str::trim) {
        if line.is_empty() {
            justified = false;
        } else if line.starts_with('#') {
            justified = true;
        } else {
            assert!(
                justified,
                "packaging/debian/lintian-overrides: no reason above `{line}`"
            );
            tags.push(line.to_owned());
        }
    }
    let deb = release().deb.clone();
    let lint = |extra: &[&str]| {
        run(Command::new(&lintian)
            .args([
                "--fail-on",
                "error,warning,info,pedantic",
                "--info",
                "--pedantic",
            ])
            .args(["--tag-display-limit", "0"])
            .args(extra)
            .arg(&deb))
    };
    let output = lint(&[]);
    let stdout = text(&output.stdout);
    let reported: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("N:")).collect();
    assert!(
        output.status.success() && reported.is_empty(),
        "lintian {}: {}\n{stdout}{}",
        deb.display(),
        output.status,
        text(&output.stderr)
    );
    // Lintian 2.116 does not report an override that matches nothing: count what each matched.
    let shown = text(&lint(&["--show-overrides"]).stdout);
    let overridden: Vec<&str> = shown.lines().filter(|l| l.starts_with("O: ")).collect();
    for tag in &tags {
        let (name, context) = tag.split_once(' ').unwrap_or((tag, ""));
        let matches = overridden
            .iter()
            .filter(|l| l.contains(&format!(": {name}")) && l.contains(context))
            .count();
        assert_eq!(matches, 1, "the override `{tag}` matches one tag:\n{shown}");
    }
    assert_eq!(overridden.len(), tags.len(), "{shown}");
}

/// The package's state per dpkg ("installed", "config-files", or "" when unknown).
fn package_state() -> String {
    let output = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", NAME]));
    text(&output.stdout).trim().to_owned()
}

/// Every path under the folders a package can touch, to compare before and after.
fn snapshot() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.insert(path.clone());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for dir in ["/etc", "/usr", "/var/lib/systemd", "/var/lib/dpkg/info"] {
        walk(Path::new(dir), &mut out);
    }
    out
}

/// Purges the package when the test ends, passed or failed, so no run leaves it installed.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if !package_state().is_empty() && package_state() != "not-installed" {
            let _ = run(Command::new("dpkg").args(["--purge", NAME]));
        }
    }
}

/// (mode & 0o7777, uid, gid) of `path`.
fn owner_and_mode(path: &str) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// The `field`th field of the `name` entry of /etc/passwd or /etc/group.
fn account_field(file: &str, name: &str, field: usize) -> Option<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .map(|f| f[field].to_owned())
}

fn gunzip(path: &str) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Runs the installed binary as `user` and `group` with `args`; its stderr.
fn run_as(user: &str, group: &str, args: &[&str]) -> String {
    let output = run(Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={group}"),
            "--init-groups",
            "--",
            "/usr/bin/office365-activations-exporter",
        ])
        .args(args)
        .env_clear());
    text(&output.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_package_installs_upgrades_removes_and_purges_cleanly() {
    if !is_root() {
        eprintln!(
            "SKIPPED debian_package_installs_upgrades_removes_and_purges_cleanly: dpkg -i needs \
             root (CI runs ./scripts/test as root)"
        );
        return;
    }
    let deb = tokio::task::spawn_blocking(|| release().deb.clone())
        .await
        .unwrap();
    let analyze = tool(
        "systemd-analyze",
        "apt-get install systemd (scripts/test does it)",
    );
    // A run that died half way may have left it installed.
    drop(PurgeOnDrop);
    let before = snapshot();
    let _purge = PurgeOnDrop;

    // Install.
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(package_state(), "installed");
    let unit = format!("/usr/lib/systemd/system/{NAME}.service");
    assert_eq!(
        owner_and_mode("/usr/bin/office365-activations-exporter").0,
        0o755
    );

    // The system user and group, for the unit's User=.
    let uid: u32 = account_field("/etc/passwd", NAME, 2)
        .expect("the package creates the system user")
        .parse()
        .unwrap();
    let gid: u32 = account_field("/etc/group", NAME, 2)
        .expect("and its group")
        .parse()
        .unwrap();
    assert!(
        uid < 1000 && gid < 1000,
        "a system user and group: {uid}:{gid}"
    );
    assert!(
        account_field("/etc/passwd", NAME, 6)
            .unwrap()
            .ends_with("nologin"),
        "no login shell"
    );

    // /etc: the commented example configuration, secrets not world-readable.
    let env_file = format!("{ETC}/{NAME}.env");
    let config = format!("{ETC}/config.yml");
    assert_eq!(owner_and_mode(ETC), (0o750, 0, gid), "{ETC}");
    assert_eq!(owner_and_mode(&env_file), (0o600, 0, 0), "{env_file}");
    assert_eq!(owner_and_mode(&config), (0o640, 0, gid), "{config}");
    assert_eq!(
        files_under(Path::new(ETC)),
        BTreeSet::from([format!("{NAME}.env"), "config.yml".to_owned()])
    );
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        read("packaging/debian/office365-activations-exporter.env")
    );
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", NAME]));
    for file in [&env_file, &config] {
        assert!(
            conffiles.contains(file.as_str()),
            "{file} is a conffile: {conffiles}"
        );
    }
    // The service's user reads config.yml (all comments: no tenants yet); nobody else can.
    let as_service = run_as(NAME, NAME, &["--config.file", &config]);
    assert!(
        as_service.contains("missing field `tenants`"),
        "{as_service}"
    );
    let as_nobody = run_as("nobody", "nogroup", &["--config.file", &config]);
    assert!(as_nobody.contains("Permission denied"), "{as_nobody}");

    // The unit: packaging/systemd's with ExecStart in /usr/bin, valid, secure, not enabled.
    let installed_unit = std::fs::read_to_string(&unit).unwrap();
    let body: String = installed_unit
        .lines()
        .skip_while(|l| l.starts_with("# Installed by") || l.starts_with("# ExecStart in"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body.replace("/usr/bin/", "/usr/local/bin/"),
        read("packaging/systemd/office365-activations-exporter.service")
    );
    assert!(installed_unit.contains(&format!("\nExecStart=/usr/bin/{NAME} $ARGS\n")));
    let verify = run(Command::new(&analyze).arg("verify").arg(&unit));
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify {unit}:\n{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&unit),
    );
    let wants: Vec<PathBuf> = snapshot()
        .into_iter()
        .filter(|p| p.starts_with("/etc/systemd") && p.to_string_lossy().contains(NAME))
        .collect();
    assert!(wants.is_empty(), "the package enables nothing: {wants:?}");

    // Man page, completions, rules and dashboards: what the installed binary renders, what the
    // repository holds.
    let installed = Path::new("/usr/bin/office365-activations-exporter");
    assert_eq!(
        gunzip(&format!("/usr/share/man/man1/{NAME}.1.gz")),
        generated(installed, &["man"])
    );
    for (path, shell) in [
        (
            format!("/usr/share/bash-completion/completions/{NAME}"),
            "bash",
        ),
        (format!("/usr/share/zsh/vendor-completions/_{NAME}"), "zsh"),
        (
            format!("/usr/share/fish/vendor_completions.d/{NAME}.fish"),
            "fish",
        ),
    ] {
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            generated(installed, &["completion", shell]),
            "{path}"
        );
    }
    for (from, to, ext) in [
        ("prometheus/rules", "rules", ".yml"),
        ("dashboards", "dashboards", ".json"),
    ] {
        for name in repo_files(from, ext) {
            let path = format!("/usr/share/{NAME}/{to}/{name}");
            assert_eq!(
                std::fs::read(&path).ok(),
                std::fs::read(root().join(from).join(&name)).ok(),
                "{path}"
            );
        }
    }
    for doc in [
        "copyright",
        "changelog.Debian.gz",
        "NOTICE",
        "THIRD-PARTY-LICENSES",
        "README.md",
    ] {
        assert!(
            Path::new(&format!("/usr/share/doc/{NAME}/{doc}")).is_file(),
            "{doc}"
        );
    }

    // The installed binary serves the demo, as the service's user.
    let mut command = tokio::process::Command::new("setpriv");
    command.args([
        &format!("--reuid={NAME}"),
        &format!("--regid={NAME}"),
        "--init-groups",
        "--",
        "/usr/bin/office365-activations-exporter",
    ]);
    let metrics = demo_metrics(command).await;
    assert!(
        metrics.contains("office365_activations_assigned_users{tenant="),
        "{metrics}"
    );

    // Upgrade (reinstall) over an administrator's edit: the edit stays, so do the modes.
    let edited = format!(
        "{}# edited by the administrator\n",
        read("packaging/debian/office365-activations-exporter.env")
    );
    std::fs::write(&env_file, &edited).unwrap();
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), edited);
    assert_eq!(owner_and_mode(&env_file), (0o600, 0, 0));
    assert_eq!(owner_and_mode(ETC), (0o750, 0, gid));

    // Remove: the program goes, the configuration stays (Debian policy).
    run_ok(Command::new("dpkg").args(["-r", NAME]));
    assert_eq!(package_state(), "config-files");
    assert!(!installed.exists() && !Path::new(&unit).exists());
    assert!(Path::new(&env_file).is_file() && Path::new(&config).is_file());

    // Purge: nothing left but the system user and group (Debian never deletes those, so files
    // they owned keep a named owner) and the backups systemd-sysusers makes of the files it
    // edited.
    run_ok(Command::new("dpkg").args(["--purge", NAME]));
    assert!(!Path::new(ETC).exists(), "{ETC} is gone");
    let after = snapshot();
    let left: Vec<_> = after.difference(&before).collect();
    let allowed = [
        "/etc/passwd-",
        "/etc/group-",
        "/etc/shadow-",
        "/etc/gshadow-",
    ];
    assert!(
        left.iter()
            .all(|p| allowed.iter().any(|a| Path::new(a) == p.as_path())),
        "left behind by the package: {left:?}"
    );
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(lost.is_empty(), "removed by the package: {lost:?}");
    assert!(
        account_field("/etc/passwd", NAME, 2).is_some(),
        "the user stays"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Man page and completions, from the clap definitions

/// The long flags and the commands `--help` lists.
fn help_flags_and_commands() -> (Vec<String>, Vec<String>) {
    let help = generated(Path::new(binary()), &["--help"]);
    let mut flags = Vec::new();
    let mut commands = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            match line.split_whitespace().next() {
                // "  check  Refresh ...", not a wrapped description.
                Some(command) if line.starts_with("  ") && !line.starts_with("   ") => {
                    commands.push(command.to_owned())
                }
                _ => in_commands = false,
            }
        }
        // Definition lines ("  -h, --help", "      --demo"), not wrapped descriptions.
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.len() - trimmed.len() <= 6 {
            for word in trimmed.split([' ', ',', '=']) {
                if let Some(name) = word.strip_prefix("--") {
                    flags.push(name.to_owned());
                }
            }
        }
    }
    assert!(
        flags.len() > 30 && commands.contains(&"check".to_owned()),
        "{help}"
    );
    (flags, commands)
}

#[test]
fn man_page_and_completions_name_every_flag_and_command_of_help() {
    let (flags, commands) = help_flags_and_commands();
    let exporter = Path::new(binary());
    let man = generated(exporter, &["man"]);
    let bash = generated(exporter, &["completion", "bash"]);
    let zsh = generated(exporter, &["completion", "zsh"]);
    let fish = generated(exporter, &["completion", "fish"]);
    for flag in &flags {
        let roff = format!("\\-\\-{}", flag.replace('-', "\\-"));
        assert!(man.contains(&roff), "the man page lacks --{flag}");
        assert!(bash.contains(&format!("--{flag}")), "bash lacks --{flag}");
        // zsh marks a repeatable flag with a leading `*`.
        assert!(
            zsh.contains(&format!("'--{flag}")) || zsh.contains(&format!("'*--{flag}")),
            "zsh lacks --{flag}"
        );
        assert!(fish.contains(&format!(" -l {flag}")), "fish lacks --{flag}");
    }
    for command in commands.iter().filter(|c| *c != "help") {
        let roff = format!("{}\\-{command}(1)", NAME.replace('-', "\\-"));
        assert!(man.contains(&roff), "man: {command}");
        assert!(bash.contains(command) && zsh.contains(command), "{command}");
        assert!(
            fish.contains(&format!("-a \"{command}\"")),
            "fish: {command}"
        );
    }
    // The generators are hidden: not in --help, not in the man page.
    assert!(!commands.contains(&"man".to_owned()) && !commands.contains(&"completion".to_owned()));
    assert!(!man.contains("completion"));
    // Sections --help has no room for.
    for section in ["EXIT STATUS", "SIGNALS", "ENVIRONMENT", "FILES"] {
        assert!(
            man.contains(&format!(".SH \"{section}\""))
                || man.contains(&format!(".SH {section}\n")),
            "{section}"
        );
    }
    // man renders it without a warning (what lintian's manpage check runs).
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join(format!("{NAME}.1"));
    std::fs::write(&page, &man).unwrap();
    if let Some(man_command) = on_path("man") {
        let output = run(Command::new(man_command)
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(&page)
            .env("MANWIDTH", "80"));
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "man --warnings: {}",
            text(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. --version and build_info

#[tokio::test]
async fn version_prints_what_prometheus_tools_print_and_build_info_carries_the_same() {
    let facts = version_facts(&generated(Path::new(binary()), &["--version"]));
    assert_eq!(
        facts.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "branch",
            "build date",
            "revision",
            "rustc version",
            "target",
            "version"
        ]
    );
    assert_eq!(facts["version"], VERSION);
    assert!(facts["rustc version"].starts_with("1."), "{facts:?}");
    assert!(facts["target"].contains("linux"), "{facts:?}");
    assert_eq!(
        generated(Path::new(binary()), &["-V"]),
        generated(Path::new(binary()), &["--version"])
    );

    let metrics = demo_metrics(tokio::process::Command::new(binary())).await;
    let labels = build_info_labels(&metrics);
    let expected: BTreeMap<String, String> = [
        ("version", "version"),
        ("revision", "revision"),
        ("branch", "branch"),
        ("builddate", "build date"),
        ("rustversion", "rustc version"),
        ("target", "target"),
    ]
    .iter()
    .map(|(label, fact)| ((*label).to_owned(), facts[*fact].clone()))
    .collect();
    assert_eq!(labels, expected);
}

// ---------------------------------------------------------------------------------------------
// 5. Licences

#[test]
fn cargo_deny_passes_licenses_and_bans() {
    tool(
        "cargo-deny",
        "cargo install --locked cargo-deny (scripts/test does it when it is missing)",
    );
    let output = run(Command::new(env!("CARGO"))
        .args([
            "deny",
            "--locked",
            "check",
            "--hide-inclusion-graph",
            "licenses",
            "bans",
        ])
        .current_dir(root()));
    assert!(
        output.status.success(),
        "cargo deny check licenses bans:\n{}",
        text(&output.stderr)
    );
}

#[test]
fn notice_lists_exactly_the_crates_cargo_lock_builds_into_the_binary() {
    let python = tool("python3", "apt-get install python3");
    let output = run(Command::new(python)
        .args(["packaging/third_party.py", "notice", "--check"])
        .current_dir(root()));
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let notice = read("NOTICE");
    assert!(notice.contains("Apache License, Version 2.0"));
    for name in ["tokio", "hyper", "rustls", "ring", "clap"] {
        assert!(
            notice.contains(&format!("\n{name} ")),
            "NOTICE lacks {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The packaging sources agree with each other

#[test]
fn debian_files_agree_with_the_systemd_ones_and_the_cargo_version() {
    // The Debian environment file: the same variables as packaging/systemd's, commented out,
    // and ARGS the binary accepts.
    let assignments = |file: &str, commented: bool| -> BTreeSet<String> {
        read(file)
            .lines()
            .filter_map(|l| {
                if commented {
                    l.strip_prefix('#')
                } else {
                    Some(l)
                }
            })
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect()
    };
    let systemd = assignments(
        "packaging/systemd/office365-activations-exporter.env",
        false,
    );
    let debian_active = assignments("packaging/debian/office365-activations-exporter.env", false);
    let debian_commented = assignments("packaging/debian/office365-activations-exporter.env", true);
    assert_eq!(
        debian_active,
        BTreeSet::from(["ARGS".to_owned()]),
        "no tenant until configured"
    );
    for variable in &systemd {
        assert!(
            debian_active.contains(variable) || debian_commented.contains(variable),
            "the Debian environment file lacks {variable}"
        );
    }
    let args_line = read("packaging/debian/office365-activations-exporter.env")
        .lines()
        .find_map(|l| l.strip_prefix("ARGS=").map(str::to_owned))
        .unwrap();
    let argv =
        std::iter::once(NAME.to_owned()).chain(args_line.split_whitespace().map(str::to_owned));
    Cli::try_parse_from(argv).expect("the binary accepts ARGS");

    let changelog = read("packaging/debian/changelog");
    assert!(
        changelog.starts_with(&format!("{NAME} ({VERSION}-1) ")),
        "packaging/debian/changelog's first entry is Cargo.toml's version {VERSION}"
    );
    let postinst = read("packaging/debian/postinst");
    assert_eq!(
        postinst.matches("#DEBHELPER#").count(),
        1,
        "one token for cargo-deb"
    );
}

#[test]
fn the_example_configuration_validates_once_uncommented() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().display().to_string();
    // "##" lines explain, "#" lines are settings.
    let uncommented: String = read("packaging/config.example.yml")
        .lines()
        .filter(|l| !l.starts_with("##"))
        .map(|l| format!("{}\n", l.strip_prefix('#').unwrap_or(l)))
        .collect::<String>()
        .replace(ETC, &folder);
    std::fs::write(dir.path().join("contoso.secret"), "secret").unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, uncommented).unwrap();
    let output = run(Command::new(binary())
        .arg("--config.file")
        .arg(&config)
        .arg("check")
        .env_clear());
    let stderr = text(&output.stderr);
    // Everything parses; it stops at the first file this test did not make.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(": tenants[1].client_certificate_") && stderr.contains("agency.pfx"),
        "{stderr}"
    );
}
