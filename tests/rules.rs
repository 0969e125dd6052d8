//! Proves the Prometheus rules shipped in `prometheus/`:
//!
//! - `promtool check rules` on every rule file in `prometheus/rules/`;
//! - `promtool test rules` on every unit-test file in `prometheus/tests/`;
//! - `promtool check config` on every example configuration `prometheus/prometheus*.yml`;
//! - consistency: every alert has unit tests that see it fire AND stay quiet, every recording rule
//!   is exercised by a test, every alert carries `for`, `severity`, `summary`, `description` and a
//!   `runbook_url` whose anchor exists in `docs/runbook.md`;
//! - the `report` label: every rule over the tenant status series (which carry `report`:
//!   user_counts, activation_counts, user_detail) keeps it in its `by (...)` / `on (...)` lists, or
//!   selects one report with a literal matcher, so no alert or rule merges the reports.
//!
//! Files are found by listing the directories, so a new rule or test file is covered without
//! editing this file.
//!
//! Needs `promtool` (Debian/Ubuntu: `apt-get install prometheus`; elsewhere set `PROMTOOL` to the
//! binary). Without it these tests FAIL: they never skip.
//!
//! The consistency checks read the YAML line by line (no YAML parser among the dev-dependencies);
//! they expect the layout the rule files use: `- alert: Name` / `- record: name` items, and in the
//! tests `alertname: Name` followed by `exp_alerts: []` (quiet) or `exp_alerts:` and items (fires).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RUNBOOK_URL_PREFIX: &str =
    "https://github.com/office365-activations-exporter/office365-activations-exporter/blob/main/docs/runbook.md#";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool_program() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

/// Runs promtool; a missing binary is a test failure with the install hint, never a skip.
fn promtool(args: &[&str], cwd: &Path) -> Output {
    let program = promtool_program();
    match Command::new(&program).args(args).current_dir(cwd).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: these tests need promtool. Install it with \
             `apt-get install prometheus` (Debian/Ubuntu), or set PROMTOOL=/path/to/promtool"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `*.yml` / `*.yaml` files directly in `dir`, sorted. Fails if there are none.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yml" | "yaml")
                )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yml files in {}", dir.display());
    files
}

fn rule_files() -> Vec<PathBuf> {
    yaml_files(&repo().join("prometheus/rules"))
}

fn test_files() -> Vec<PathBuf> {
    yaml_files(&repo().join("prometheus/tests"))
}

fn name(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn promtool_is_installed() {
    let output = promtool(&["--version"], &repo());
    assert!(
        output.status.success(),
        "`promtool --version` failed:\n{}",
        output_text(&output)
    );
}

#[test]
fn every_rule_file_passes_promtool_check_rules() {
    let mut failures = Vec::new();
    for file in rule_files() {
        let path = file.to_str().expect("utf-8 path");
        let output = promtool(
            &["check", "rules", "--lint=all", "--lint-fatal", path],
            &repo(),
        );
        if !output.status.success() {
            failures.push(format!("== {} ==\n{}", name(&file), output_text(&output)));
        }
    }
    assert!(
        failures.is_empty(),
        "promtool check rules failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_rule_unit_test_file_passes_promtool_test_rules() {
    // One promtool per file, in parallel: the slowest file sets the pace.
    let files = test_files();
    let results: Vec<(PathBuf, Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| {
                scope.spawn(move || {
                    let dir = file.parent().expect("test file has a directory");
                    let file_name = file
                        .file_name()
                        .and_then(|f| f.to_str())
                        .expect("utf-8 name");
                    // rule_files in a test file are relative to the test file's directory
                    (file.clone(), promtool(&["test", "rules", file_name], dir))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("promtool thread panicked"))
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, output)| !output.status.success())
        .map(|(file, output)| format!("== {} ==\n{}", name(file), output_text(output)))
        .collect();
    assert!(
        failures.is_empty(),
        "promtool test rules failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_example_prometheus_config_passes_promtool_check_config() {
    // prometheus/prometheus*.yml: example Prometheus configurations
    let dir = repo().join("prometheus");
    let configs: Vec<PathBuf> = yaml_files(&dir)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("prometheus"))
        })
        .collect();
    assert!(
        !configs.is_empty(),
        "no prometheus/prometheus*.yml example configuration"
    );
    let mut failures = Vec::new();
    for file in configs {
        let path = file.to_str().expect("utf-8 path");
        let output = promtool(&["check", "config", path], &dir);
        if !output.status.success() {
            failures.push(format!("== {} ==\n{}", name(&file), output_text(&output)));
        }
    }
    assert!(
        failures.is_empty(),
        "promtool check config failed:\n{}",
        failures.join("\n")
    );
}

/// Value of a `key: value` YAML line (item dash allowed), quotes stripped.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
    let rest = trimmed.strip_prefix(key)?.strip_prefix(':')?;
    Some(rest.trim().trim_matches(|c| c == '"' || c == '\''))
}

/// Alert name -> the text of its rule item, for every `- alert:` in the rule files.
fn alerts() -> BTreeMap<String, (String, String)> {
    let mut alerts = BTreeMap::new();
    for file in rule_files() {
        let text = read(&file);
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            let starts_item = line.trim_start().starts_with("- alert:")
                || line.trim_start().starts_with("- record:")
                || line.trim_start().starts_with("- name:");
            if starts_item {
                if let Some((alert, body)) = current.take() {
                    alerts.insert(alert, (name(&file), body));
                }
            }
            if let Some(alert) = yaml_value(line, "alert") {
                current = Some((alert.to_string(), String::new()));
            }
            if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        if let Some((alert, body)) = current.take() {
            alerts.insert(alert, (name(&file), body));
        }
    }
    assert!(
        !alerts.is_empty(),
        "no `- alert:` found in prometheus/rules/*.yml"
    );
    alerts
}

fn recording_rules() -> BTreeSet<String> {
    rule_files()
        .iter()
        .flat_map(|file| {
            read(file)
                .lines()
                .filter_map(|line| yaml_value(line, "record").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_alert_has_unit_tests_that_see_it_fire_and_stay_quiet() {
    // alert name -> (tested firing, tested quiet)
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for file in test_files() {
        let text = read(&file);
        let mut alertname: Option<String> = None;
        for line in text.lines() {
            if let Some(value) = yaml_value(line, "alertname") {
                alertname = Some(value.to_string());
            } else if let Some(value) = yaml_value(line, "exp_alerts") {
                if let Some(alert) = alertname.take() {
                    let entry = seen.entry(alert).or_default();
                    if value.split_whitespace().collect::<String>() == "[]" {
                        entry.1 = true;
                    } else {
                        entry.0 = true;
                    }
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (alert, (file, _)) in alerts() {
        let (fires, quiet) = seen.get(&alert).copied().unwrap_or_default();
        if !fires {
            problems.push(format!(
                "{alert} ({file}): no test in prometheus/tests expects it to fire"
            ));
        }
        if !quiet {
            problems.push(format!(
                "{alert} ({file}): no test in prometheus/tests expects it to stay quiet (exp_alerts: [])"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "alerts without unit tests:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_recording_rule_is_exercised_by_a_unit_test() {
    let tests: String = test_files().iter().map(|f| read(f)).collect();
    let untested: Vec<String> = recording_rules()
        .into_iter()
        .filter(|rule| !tests.contains(rule.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "recording rules not mentioned by any prometheus/tests/*.yml: {untested:?}"
    );
}

/// The exporter's series with a `report` label: the tenant status series and the exporter-wide
/// histograms (by their base name), and the recording-rule level that keeps it. (The tenant's
/// redirect latency summary and credential expiry have no `report` label.)
const STATUS_METRICS: &[&str] = &[
    "office365_activations_up",
    "office365_activations_last_refresh_success_timestamp_seconds",
    "office365_activations_refreshes_total",
    "office365_activations_fetch_errors_total",
    "office365_activations_last_refresh_duration_seconds",
    "office365_activations_redirect_latency_seconds",
    "office365_activations_refresh_duration_seconds",
    "office365_activations_report_refresh_timestamp_seconds",
];
const STATUS_RULE_LEVEL: &str = "tenant_report:";

/// Whether a metric name is one of the status series (or a histogram series of one).
fn is_status_metric(name: &str) -> bool {
    name.starts_with(STATUS_RULE_LEVEL)
        || STATUS_METRICS.iter().any(|metric| {
            name.strip_prefix(metric)
                .is_some_and(|rest| matches!(rest, "" | "_bucket" | "_sum" | "_count"))
        })
}

/// Problems with the `report` label in one PromQL expression: status series read without a
/// literal `report` matcher and aggregated or joined `by`/`on` a label list without `report`, or
/// with `report` in a `without`/`ignoring` list. (tests/dashboards.rs checks the dashboards the
/// same way.)
fn report_label_problems(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut unpinned = BTreeSet::new();
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            skip_string(&mut i);
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        skip_space(&mut j);
        let opens = |ch: char| j < chars.len() && chars[j] == ch;
        if matches!(word.as_str(), "by" | "on" | "without" | "ignoring") && opens('(') {
            let close = chars[j..]
                .iter()
                .position(|&ch| ch == ')')
                .map_or(chars.len(), |p| j + p);
            let labels = chars[j + 1..close]
                .iter()
                .collect::<String>()
                .split(',')
                .map(|label| label.trim().to_string())
                .filter(|label| !label.is_empty())
                .collect();
            lists.push((word, labels));
            i = close;
        } else if is_status_metric(&word) {
            let mut pinned = false;
            if opens('{') {
                let mut k = j + 1;
                while k < chars.len() && chars[k] != '}' {
                    if chars[k] == '"' {
                        skip_string(&mut k);
                        continue;
                    }
                    let at_label = !(chars[k - 1].is_ascii_alphanumeric() || chars[k - 1] == '_');
                    if at_label && chars[k..].iter().take(6).collect::<String>() == "report" {
                        let mut m = k + "report".len();
                        skip_space(&mut m);
                        if chars.get(m) == Some(&'=') {
                            m += 1;
                            if chars.get(m) == Some(&'~') {
                                m += 1;
                            }
                            skip_space(&mut m);
                            if chars.get(m) == Some(&'"') {
                                let value_start = m;
                                skip_string(&mut m);
                                pinned = !chars[value_start..m].contains(&'$');
                            }
                        }
                    }
                    k += 1;
                }
                i = k;
            }
            if !pinned {
                unpinned.insert(word);
            }
        }
    }
    if unpinned.is_empty() {
        return Vec::new();
    }
    let series = unpinned.into_iter().collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    for (keyword, labels) in lists {
        let has_report = labels.iter().any(|l| l == "report");
        match keyword.as_str() {
            "by" | "on" if !labels.is_empty() && !has_report => problems.push(format!(
                "aggregates or joins {series} {keyword} ({}) without `report`: the reports would be merged",
                labels.join(", ")
            )),
            "without" | "ignoring" if has_report => {
                problems.push(format!("drops `report` of {series} with {keyword} (...)"))
            }
            _ => {}
        }
    }
    problems
}

/// (rule file, `alert` or `record` name, its `expr`) for every rule of the rule files.
fn rule_expressions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for file in rule_files() {
        let text = read(&file);
        let mut items: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("- alert:") || trimmed.starts_with("- record:") {
                let rule = yaml_value(line, "alert")
                    .or_else(|| yaml_value(line, "record"))
                    .unwrap_or_default();
                items.push((rule.to_string(), String::new()));
            } else if trimmed.starts_with("- name:") {
                items.push((String::new(), String::new()));
            }
            if let Some((_, body)) = items.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        for (rule, body) in items.into_iter().filter(|(rule, _)| !rule.is_empty()) {
            let expr = yaml_block(&body, "expr").unwrap_or_default();
            let expr = expr
                .trim_start_matches("expr:")
                .trim_start()
                .trim_start_matches(['|', '>', '-'])
                .trim()
                .to_string();
            out.push((name(&file), rule, expr));
        }
    }
    assert!(
        !out.is_empty(),
        "no rule expressions found in prometheus/rules/*.yml"
    );
    out
}

#[test]
fn every_rule_over_status_series_keeps_the_report_label() {
    let mut problems = Vec::new();
    let mut status_rules = 0;
    for (file, rule, expr) in rule_expressions() {
        if STATUS_METRICS.iter().any(|m| expr.contains(m)) || expr.contains(STATUS_RULE_LEVEL) {
            status_rules += 1;
        }
        for problem in report_label_problems(&expr) {
            problems.push(format!("{rule} ({file}): {problem}\n    {expr}"));
        }
    }
    assert!(
        status_rules >= 6,
        "only {status_rules} rules read status series: is the scan broken?"
    );
    assert!(
        problems.is_empty(),
        "rules that merge the reports of the status series:\n{}",
        problems.join("\n")
    );
}

#[test]
fn report_label_check_tells_kept_merged_and_pinned_reports_apart() {
    let ok = |expr: &str| {
        assert!(
            report_label_problems(expr).is_empty(),
            "{expr}: {:?}",
            report_label_problems(expr)
        )
    };
    let bad = |expr: &str| {
        assert_eq!(report_label_problems(expr).len(), 1, "{expr}");
    };
    ok("sum by (job, tenant, report) (increase(office365_activations_fetch_errors_total{reason=\"throttled\"}[1h])) >= on () group_left () t");
    ok("(time() - office365_activations_last_refresh_success_timestamp_seconds > on (report) group_left () 2 * t) or on (job, instance, tenant, report) (office365_activations_up == 0)");
    ok("max by (job, tenant) (office365_activations_report_refresh_timestamp_seconds{report=~\"user_counts|\"} offset 7d)");
    ok("max by (job, tenant) (office365_activations_activated_users)");
    // the rules as they were before the report family
    bad("time() - (max by (job, tenant) (office365_activations_report_refresh_timestamp_seconds) > 0)");
    bad("sum by (job, tenant) (increase(office365_activations_fetch_errors_total{reason=\"throttled\"}[1h]))");
    bad("time() - office365_activations_last_refresh_success_timestamp_seconds or on (job, instance, tenant) (office365_activations_up == 0)");
    bad("tenant_report:office365_activations_report_age_seconds and ignoring (report) x");
    bad("max by (tenant) (office365_activations_up{report=~\"$report\"})");
}

/// The `key:` line and its continuation lines (indented deeper, e.g. a `>-` block), joined.
fn yaml_block(body: &str, key: &str) -> Option<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut lines = body
        .lines()
        .skip_while(|line| yaml_value(line, key).is_none());
    let first = lines.next()?;
    let mut text = first.trim().to_string();
    for line in lines.take_while(|line| line.trim().is_empty() || indent(line) > indent(first)) {
        text.push(' ');
        text.push_str(line.trim());
    }
    Some(text)
}

/// GitHub's anchor for a Markdown heading.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_for_severity_annotations_and_a_runbook_section() {
    let runbook_path = repo().join("docs/runbook.md");
    let runbook = read(&runbook_path);
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| github_anchor(line.trim_start_matches('#')))
        .collect();
    let mut problems = Vec::new();
    for (alert, (file, body)) in alerts() {
        let mut problem = |what: String| problems.push(format!("{alert} ({file}): {what}"));
        for key in [
            "expr",
            "for",
            "severity",
            "summary",
            "description",
            "runbook_url",
        ] {
            if !body.lines().any(|line| yaml_value(line, key).is_some()) {
                problem(format!("no `{key}`"));
            }
        }
        for key in ["summary", "description"] {
            let text = yaml_block(&body, key).unwrap_or_default();
            if !text.contains("$labels.tenant") && !text.contains("$labels.job") {
                problem(format!(
                    "`{key}` names neither the tenant ($labels.tenant) nor the job"
                ));
            }
        }
        let expected = format!("{RUNBOOK_URL_PREFIX}{}", alert.to_lowercase());
        match body
            .lines()
            .find_map(|line| yaml_value(line, "runbook_url"))
        {
            Some(url) if url == expected => {}
            Some(url) => problem(format!("runbook_url is {url}, expected {expected}")),
            None => {}
        }
        if !anchors.contains(&alert.to_lowercase()) {
            problem(format!(
                "docs/runbook.md has no section `## {alert}` (anchor #{})",
                alert.to_lowercase()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "alert conventions:\n{}",
        problems.join("\n")
    );
}

#[test]
fn runbook_explains_how_to_change_thresholds() {
    let runbook = read(&repo().join("docs/runbook.md"));
    assert!(
        runbook.lines().any(|line| line.starts_with('#')
            && github_anchor(line.trim_start_matches('#')) == "changing-thresholds"),
        "docs/runbook.md needs a `## Changing thresholds` section"
    );
}

#[test]
fn github_anchor_matches_github() {
    assert_eq!(
        github_anchor(" Office365ActivationsDropped"),
        "office365activationsdropped"
    );
    assert_eq!(github_anchor(" Changing thresholds"), "changing-thresholds");
    assert_eq!(
        github_anchor(" Loading the rules (Prometheus)"),
        "loading-the-rules-prometheus"
    );
}
