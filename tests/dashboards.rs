//! Lints the Grafana dashboards in `dashboards/*.json` (every file found there is checked):
//!
//! - every panel and every query variable uses the `datasource` variable (`${datasource}`), which
//!   is a variable of type datasource for prometheus; no `__inputs` or `${DS_...}` placeholders
//!   (file provisioning cannot resolve them);
//! - a unit on every panel with queries, a description on every panel (rows excepted: Grafana has
//!   no description for them), a stable human-readable `uid`, `schemaVersion` >= 39;
//! - `job` and `tenant` (and `product_type` and `report` where used) are `label_values(...)` variables,
//!   multi-select with All = `.*`, used only with `=~`; every `$variable` used is defined; every
//!   `rate()` uses `$__rate_interval`; panels do not overlap;
//! - every recording rule the dashboards read is defined in `prometheus/rules/`;
//! - the tenant status series carry a `report` label (user_counts, activation_counts,
//!   user_detail): a query over them that aggregates or joins `by`/`on` a label list keeps
//!   `report`, and on a dashboard with a `report` variable it filters on `$report`;
//! - the exporter-wide histograms (download latency, refresh duration: by `report`, no `tenant`)
//!   are neither filtered on `tenant` (a selection of tenants would match nothing) nor grouped or
//!   joined by it;
//! - every PromQL expression (panel targets and variable queries, template variables substituted)
//!   parses: they are written as recording rules into a temporary file and checked with
//!   `promtool check rules`.
//!
//! Each check is its own test; failures name the dashboard, the panel and the problem. The last
//! test feeds the linter a bad dashboard and asserts every check complains.
//!
//! Needs `promtool` (Debian/Ubuntu: `apt-get install prometheus`; elsewhere set `PROMTOOL` to the
//! binary). Without it the PromQL test FAILS: it never skips.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

const DATASOURCE_VARIABLE: &str = "datasource";
const KNOWN_UNITS: &[&str] = &[
    "short",
    "none",
    "percent",
    "percentunit",
    "s",
    "ms",
    "µs",
    "ns",
    "m",
    "h",
    "d",
    "dtdurations",
    "bytes",
    "decbytes",
    "bits",
    "reqps",
    "ops",
    "dateTimeAsIso",
    "dateTimeFromNow",
];
/// Template variables every dashboard must offer.
const REQUIRED_VARIABLES: &[&str] = &["job", "tenant"];
/// Label-filter variables: `label_values(...)`, multi-select, All = `.*`.
const FILTER_VARIABLES: &[&str] = &["job", "tenant", "product_type", "report"];
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
/// The exporter-wide histograms: by `report`, over all tenants, without a `tenant` label (per
/// tenant: `office365_activations_tenant_redirect_latency_seconds_{sum,count}` and
/// `office365_activations_last_refresh_duration_seconds`).
const EXPORTER_WIDE_METRICS: &[&str] = &[
    "office365_activations_redirect_latency_seconds",
    "office365_activations_refresh_duration_seconds",
];

// ------------------------------------------------------------------------------------------------
// Loading

struct Dashboard {
    file: String,
    text: String,
    json: Value,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards/*.json");
    files
        .into_iter()
        .map(|path| {
            let file = format!("dashboards/{}", path.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            Dashboard { file, text, json }
        })
        .collect()
}

/// Runs one check over every dashboard and fails with all problems found.
fn assert_clean(check_name: &str, check: impl Fn(&Dashboard) -> Vec<String>) {
    let problems: Vec<String> = dashboards().iter().flat_map(check).collect();
    assert!(
        problems.is_empty(),
        "{check_name}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ------------------------------------------------------------------------------------------------
// Walking the JSON

/// All panels, including those nested in (collapsed) rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn targets(panel: &Value) -> Vec<&Value> {
    panel["targets"]
        .as_array()
        .map(|t| t.iter().collect())
        .unwrap_or_default()
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `<file>: panel "<title>" (id N)` for messages.
fn where_panel(file: &str, panel: &Value) -> String {
    format!(
        "{file}: panel \"{}\" (id {})",
        str_of(panel, "title"),
        panel["id"]
    )
}

fn where_variable(file: &str, variable: &Value) -> String {
    format!("{file}: variable ${}", str_of(variable, "name"))
}

/// The query string of a query variable (`query` is a string or `{ "query": ... }`).
fn variable_query(variable: &Value) -> String {
    match &variable["query"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

/// Every PromQL expression: (where, expression as written).
fn expressions(d: &Dashboard) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(&d.json) {
        for target in targets(panel) {
            if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                out.push((
                    format!(
                        "{} target {}",
                        where_panel(&d.file, panel),
                        str_of(target, "refId")
                    ),
                    expr.to_string(),
                ));
            }
        }
    }
    for variable in variables(&d.json) {
        if variable["type"] == "query" {
            if let Some(expr) = variable_promql(&variable_query(variable)) {
                out.push((where_variable(&d.file, variable), expr));
            }
        }
    }
    out
}

/// The PromQL inside a Prometheus variable query: the selector of `label_values(selector, label)`,
/// the expression of `query_result(expr)`; `None` for `label_values(label)`, `label_names()`, ...
fn variable_promql(query: &str) -> Option<String> {
    let query = query.trim();
    let inner = |prefix: &str| -> Option<String> {
        let rest = query.strip_prefix(prefix)?.trim_start().strip_prefix('(')?;
        Some(rest.strip_suffix(')')?.to_string())
    };
    if let Some(args) = inner("label_values") {
        // the label is after the last top-level comma
        let mut depth = 0i32;
        let mut in_string = false;
        let mut split = None;
        for (i, c) in args.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' | '{' | '[' if !in_string => depth += 1,
                ')' | '}' | ']' if !in_string => depth -= 1,
                ',' if !in_string && depth == 0 => split = Some(i),
                _ => {}
            }
        }
        return split.map(|i| args[..i].trim().to_string());
    }
    if let Some(expr) = inner("query_result") {
        return Some(expr);
    }
    if query.starts_with("label_names") || query.starts_with("metrics") || query.is_empty() {
        return None;
    }
    Some(query.to_string())
}

// ------------------------------------------------------------------------------------------------
// Template variables in expressions

/// Each `$name` / `${name}` / `${name:format}` in `expr`: (byte offset, name, length).
fn template_variables(expr: &str) -> Vec<(usize, String, usize)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'{') {
            if let Some(end) = expr[i..].find('}') {
                let inside = &expr[i + 2..i + end];
                let name = inside.split(':').next().unwrap_or("").to_string();
                out.push((i, name, end + 1));
                i += end + 1;
                continue;
            }
        }
        let len = expr[i + 1..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if len > 0 {
            out.push((i, expr[i + 1..i + 1 + len].to_string(), len + 1));
        }
        i += len + 1;
    }
    out
}

fn is_builtin(name: &str) -> bool {
    name.starts_with("__")
}

/// What a variable is replaced with for the parse check.
fn substitute_value(name: &str) -> &'static str {
    match name {
        "__rate_interval" => "5m",
        "__interval" => "1m",
        "__range" => "1d",
        "__range_s" => "86400",
        "__range_ms" => "86400000",
        "__interval_ms" | "__rate_interval_ms" => "60000",
        _ => ".*",
    }
}

fn substitute(expr: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (at, name, len) in template_variables(expr) {
        out.push_str(&expr[last..at]);
        out.push_str(substitute_value(&name));
        last = at + len;
    }
    out.push_str(&expr[last..]);
    out
}

/// `expr` without the contents of its string literals (so `instance="a:1"` is not a metric name).
fn without_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Metric names with a colon (recording rules) that an expression reads.
fn recording_rule_names(expr: &str) -> BTreeSet<String> {
    without_strings(&substitute(expr))
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.contains(':') && token.starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------------------------------------
// The checks (each returns the problems of one dashboard)

fn check_schema_version(d: &Dashboard) -> Vec<String> {
    match d.json["schemaVersion"].as_u64() {
        Some(v) if v >= 39 => vec![],
        other => vec![format!(
            "{}: schemaVersion is {other:?}, must be 39 or later",
            d.file
        )],
    }
}

fn check_uid(d: &Dashboard) -> Vec<String> {
    let uid = str_of(&d.json, "uid");
    let stable = !uid.is_empty()
        && uid.len() <= 40
        && uid.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && uid.bytes().any(|b| b.is_ascii_lowercase());
    if stable {
        vec![]
    } else {
        vec![format!(
            "{}: uid {uid:?} must be a fixed, readable kebab-case name of at most 40 characters \
             (links and provisioning rely on it)",
            d.file
        )]
    }
}

fn check_no_import_placeholders(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    if d.json.get("__inputs").is_some() || d.text.contains("\"__inputs\"") {
        problems.push(format!(
            "{}: has __inputs (UI-import only; file provisioning cannot resolve them)",
            d.file
        ));
    }
    if d.text.contains("${DS_") || d.text.contains("$DS_") {
        problems.push(format!(
            "{}: contains a ${{DS_...}} placeholder; use ${{{DATASOURCE_VARIABLE}}}",
            d.file
        ));
    }
    problems
}

fn check_datasource_variable(d: &Dashboard) -> Vec<String> {
    let found = variables(&d.json)
        .into_iter()
        .find(|v| v["name"] == DATASOURCE_VARIABLE);
    match found {
        None => vec![format!("{}: no `{DATASOURCE_VARIABLE}` template variable", d.file)],
        Some(v) if v["type"] != "datasource" || v["query"] != "prometheus" => vec![format!(
            "{}: variable ${DATASOURCE_VARIABLE} must have type \"datasource\" and query \"prometheus\", has type {} query {}",
            d.file, v["type"], v["query"]
        )],
        Some(_) => vec![],
    }
}

fn uses_datasource_variable(datasource: &Value) -> bool {
    let uid = match datasource {
        Value::Object(o) => o.get("uid").and_then(Value::as_str).unwrap_or(""),
        Value::String(s) => s.as_str(),
        _ => "",
    };
    uid == format!("${{{DATASOURCE_VARIABLE}}}") || uid == format!("${DATASOURCE_VARIABLE}")
}

fn check_datasources(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in panels(&d.json).into_iter().filter(|p| !is_row(p)) {
        if !uses_datasource_variable(&panel["datasource"]) {
            problems.push(format!(
                "{}: datasource is {}, must be {{\"type\":\"prometheus\",\"uid\":\"${{{DATASOURCE_VARIABLE}}}\"}}",
                where_panel(&d.file, panel),
                panel["datasource"]
            ));
        }
        for target in targets(panel) {
            if let Some(ds) = target.get("datasource") {
                if !uses_datasource_variable(ds) {
                    problems.push(format!(
                        "{} target {}: datasource is {ds}, must use ${{{DATASOURCE_VARIABLE}}}",
                        where_panel(&d.file, panel),
                        str_of(target, "refId")
                    ));
                }
            }
        }
    }
    for variable in variables(&d.json) {
        if variable["type"] == "query" && !uses_datasource_variable(&variable["datasource"]) {
            problems.push(format!(
                "{}: datasource is {}, must use ${{{DATASOURCE_VARIABLE}}}",
                where_variable(&d.file, variable),
                variable["datasource"]
            ));
        }
    }
    for annotation in d.json["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if annotation["builtIn"] != 1 && !uses_datasource_variable(&annotation["datasource"]) {
            problems.push(format!(
                "{}: annotation \"{}\" must use ${{{DATASOURCE_VARIABLE}}}",
                d.file,
                str_of(annotation, "name")
            ));
        }
    }
    problems
}

fn check_units(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in panels(&d.json)
        .into_iter()
        .filter(|p| !targets(p).is_empty())
    {
        let unit = str_of(&panel["fieldConfig"]["defaults"], "unit");
        if unit.is_empty() {
            problems.push(format!(
                "{}: no unit (fieldConfig.defaults.unit)",
                where_panel(&d.file, panel)
            ));
        } else if !KNOWN_UNITS.contains(&unit) {
            problems.push(format!(
                "{}: unknown unit {unit:?} (known: {KNOWN_UNITS:?})",
                where_panel(&d.file, panel)
            ));
        }
        for over in panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for property in over["properties"].as_array().into_iter().flatten() {
                if property["id"] == "unit" {
                    let unit = property["value"].as_str().unwrap_or("");
                    if !KNOWN_UNITS.contains(&unit) {
                        problems.push(format!(
                            "{}: override with unknown unit {unit:?}",
                            where_panel(&d.file, panel)
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn check_descriptions(d: &Dashboard) -> Vec<String> {
    panels(&d.json)
        .into_iter()
        .filter(|p| !is_row(p))
        .filter(|p| str_of(p, "description").trim().is_empty())
        .map(|p| format!("{}: no description", where_panel(&d.file, p)))
        .collect()
}

fn check_filter_variables(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    let vars = variables(&d.json);
    for required in REQUIRED_VARIABLES {
        if !vars.iter().any(|v| v["name"] == *required) {
            problems.push(format!("{}: no `{required}` template variable", d.file));
        }
    }
    for variable in vars
        .iter()
        .filter(|v| FILTER_VARIABLES.contains(&str_of(v, "name")))
    {
        let at = where_variable(&d.file, variable);
        let name = str_of(variable, "name");
        if variable["type"] != "query" {
            problems.push(format!(
                "{at}: type must be \"query\", is {}",
                variable["type"]
            ));
        }
        let query = variable_query(variable);
        let label_ok = query.starts_with("label_values(")
            && query
                .trim_end()
                .trim_end_matches(')')
                .trim_end()
                .ends_with(name)
            && variable_promql(&query).is_some();
        if !label_ok {
            problems.push(format!(
                "{at}: query must be label_values(<metric selector>, {name}), is {query:?}"
            ));
        }
        if variable["multi"] != true {
            problems.push(format!("{at}: must be multi-select (\"multi\": true)"));
        }
        if variable["includeAll"] != true {
            problems.push(format!("{at}: must offer All (\"includeAll\": true)"));
        }
        if variable["allValue"] != ".*" {
            problems.push(format!(
                "{at}: allValue must be \".*\", is {}",
                variable["allValue"]
            ));
        }
    }
    problems
}

/// Variables only inside `=~"..."` / `!~"..."` (a multi-value or All selection is a regex), only
/// defined variables, and `rate()`/`irate()` windows of `$__rate_interval`.
fn check_variable_use(d: &Dashboard) -> Vec<String> {
    let defined: BTreeSet<&str> = variables(&d.json)
        .iter()
        .map(|v| str_of(v, "name"))
        .collect();
    let mut problems = Vec::new();
    for (at, expr) in expressions(d) {
        for (offset, name, _) in template_variables(&expr) {
            if is_builtin(&name) {
                continue;
            }
            if !defined.contains(name.as_str()) {
                problems.push(format!(
                    "{at}: uses ${name}, which is not a variable of this dashboard"
                ));
            }
            let before = expr[..offset].rfind('"').map(|q| expr[..q].trim_end());
            if !matches!(before, Some(b) if b.ends_with("=~") || b.ends_with("!~")) {
                problems.push(format!(
                    "{at}: ${name} must be used in a regex matcher (label=~\"${name}\"): multi-select and All need =~; in {expr:?}"
                ));
            }
        }
        // rate( and irate(: the first range after it is the window
        let code = without_strings(&expr);
        let mut rest = code.as_str();
        while let Some(pos) = rest.find("rate(") {
            rest = &rest[pos + "rate(".len()..];
            let window = rest.find('[').and_then(|open| {
                rest[open + 1..]
                    .find(']')
                    .map(|len| &rest[open + 1..open + 1 + len])
            });
            if let Some(window) = window {
                if window != "$__rate_interval" {
                    problems.push(format!(
                        "{at}: rate window [{window}] must be [$__rate_interval] in {expr:?}"
                    ));
                }
            }
        }
    }
    problems
}

fn check_layout(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = BTreeMap::new();
    let mut boxes = Vec::new();
    for panel in panels(&d.json) {
        let at = where_panel(&d.file, panel);
        match panel["id"].as_u64() {
            Some(id) => {
                if let Some(other) = ids.insert(id, str_of(panel, "title").to_string()) {
                    problems.push(format!("{at}: id {id} also used by panel \"{other}\""));
                }
            }
            None => problems.push(format!("{at}: no numeric id")),
        }
        let g = &panel["gridPos"];
        let (Some(x), Some(y), Some(w), Some(h)) = (
            g["x"].as_u64(),
            g["y"].as_u64(),
            g["w"].as_u64(),
            g["h"].as_u64(),
        ) else {
            problems.push(format!("{at}: gridPos needs integer x, y, w, h"));
            continue;
        };
        if w == 0 || h == 0 || x + w > 24 {
            problems.push(format!(
                "{at}: gridPos {g} is empty or wider than the 24-column grid"
            ));
        }
        boxes.push((at, x, y, w, h));
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let overlap = a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
            if overlap {
                problems.push(format!("{}: overlaps {}", a.0, b.0));
            }
        }
    }
    problems
}

/// Recording rules defined in prometheus/rules/*.yml (`- record: name`).
fn defined_recording_rules() -> BTreeSet<String> {
    let dir = repo().join("prometheus/rules");
    let mut names = BTreeSet::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("directory entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("rule file");
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            if let Some(name) = line.strip_prefix("record:") {
                names.insert(
                    name.trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_string(),
                );
            }
        }
    }
    names
}

fn check_recording_rules_exist(d: &Dashboard, defined: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, expr) in expressions(d) {
        for name in recording_rule_names(&expr) {
            if !defined.contains(&name) {
                problems.push(format!(
                    "{at}: reads {name}, which no `record:` in prometheus/rules/*.yml defines"
                ));
            }
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// The `report` label of the status series

/// Whether `name` is one of `metrics` or a histogram series of one.
fn is_series_of(name: &str, metrics: &[&str]) -> bool {
    metrics.iter().any(|metric| {
        name.strip_prefix(metric)
            .is_some_and(|rest| matches!(rest, "" | "_bucket" | "_sum" | "_count"))
    })
}

/// Whether a metric name is one of the status series (or a histogram series of one).
fn is_status_metric(name: &str) -> bool {
    name.starts_with(STATUS_RULE_LEVEL) || is_series_of(name, STATUS_METRICS)
}

/// What [`scan_report_use`] found in one expression.
#[derive(Debug, Default)]
struct ReportUse {
    /// Status series read without a literal `report` matcher (`report="x"` / `report=~"x|y"`).
    unpinned: BTreeSet<String>,
    /// Status series read with one.
    pinned: BTreeSet<String>,
    /// `by (...)` / `on (...)` label lists: (keyword, labels).
    keeps: Vec<(String, Vec<String>)>,
    /// `without (...)` / `ignoring (...)` label lists.
    drops: Vec<(String, Vec<String>)>,
}

/// Scans a PromQL expression: which status series it reads (and whether their selector pins
/// `report` to literal values), and its grouping and matching label lists.
fn scan_report_use(expr: &str) -> ReportUse {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = ReportUse::default();
    let mut i = 0;
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
            let labels: Vec<String> = chars[j + 1..close]
                .iter()
                .collect::<String>()
                .split(',')
                .map(|label| label.trim().to_string())
                .filter(|label| !label.is_empty())
                .collect();
            if matches!(word.as_str(), "by" | "on") {
                found.keeps.push((word, labels));
            } else {
                found.drops.push((word, labels));
            }
            i = close;
        } else if is_status_metric(&word) {
            let mut pinned = false;
            if opens('{') {
                // the selector: is there report="literal" or report=~"literal"?
                let mut k = j + 1;
                while k < chars.len() && chars[k] != '}' {
                    if chars[k] == '"' {
                        skip_string(&mut k);
                        continue;
                    }
                    let rest: String = chars[k..].iter().take(8).collect();
                    let before_ok =
                        k == 0 || !(chars[k - 1].is_ascii_alphanumeric() || chars[k - 1] == '_');
                    if before_ok && rest.starts_with("report") {
                        let mut m = k + "report".len();
                        skip_space(&mut m);
                        if m < chars.len() && chars[m] == '=' {
                            m += 1;
                            if m < chars.len() && chars[m] == '~' {
                                m += 1;
                            }
                            skip_space(&mut m);
                            if m < chars.len() && chars[m] == '"' {
                                let value_start = m;
                                skip_string(&mut m);
                                let value: String = chars[value_start..m].iter().collect();
                                pinned = !value.contains('$');
                            }
                        }
                    }
                    k += 1;
                }
                i = k;
            }
            if pinned {
                found.pinned.insert(word);
            } else {
                found.unpinned.insert(word);
            }
        }
    }
    found
}

/// Problems with the `report` label in one expression: status series aggregated or joined by a
/// label list without `report` (which would merge the reports), or `report` dropped with
/// `without`/`ignoring`. An expression whose status series all pin `report` to literal values
/// may group without it.
fn report_label_problems(expr: &str) -> Vec<String> {
    let found = scan_report_use(expr);
    if found.unpinned.is_empty() {
        return Vec::new();
    }
    let series = found
        .unpinned
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let mut problems = Vec::new();
    for (keyword, labels) in &found.keeps {
        if !labels.is_empty() && !labels.iter().any(|l| l == "report") {
            problems.push(format!(
                "aggregates or joins {series} {keyword} ({}) without `report`: the reports would be merged",
                labels.join(", ")
            ));
        }
    }
    for (keyword, labels) in &found.drops {
        if labels.iter().any(|l| l == "report") {
            problems.push(format!("drops `report` of {series} with {keyword} (...)"));
        }
    }
    problems
}

fn check_report_label(d: &Dashboard) -> Vec<String> {
    let has_report_variable = variables(&d.json).iter().any(|v| v["name"] == "report");
    let mut problems = Vec::new();
    for (at, expr) in expressions(d) {
        for problem in report_label_problems(&expr) {
            problems.push(format!("{at}: {problem}: {expr:?}"));
        }
        let found = scan_report_use(&expr);
        let uses_variable = template_variables(&expr)
            .iter()
            .any(|(_, name, _)| name == "report");
        if has_report_variable
            && !found.unpinned.is_empty()
            && !uses_variable
            && !at.contains(": variable $")
        {
            problems.push(format!(
                "{at}: reads status series {:?} without filtering on $report (report=~\"$report\"): {expr:?}",
                found.unpinned
            ));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// No `tenant` on the exporter-wide histograms

/// The label names matched in the selectors of the exporter-wide histograms read by `expr`:
/// (metric, label) pairs.
fn exporter_wide_matchers(expr: &str) -> Vec<(String, String)> {
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
    let word_at = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len()
            && (chars[*i].is_ascii_alphanumeric() || chars[*i] == '_' || chars[*i] == ':')
        {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let mut found = Vec::new();
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
        let metric = word_at(&mut i);
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if !is_series_of(&metric, EXPORTER_WIDE_METRICS) || j >= chars.len() || chars[j] != '{' {
            continue;
        }
        // the selector: every word outside a string is a label name
        j += 1;
        while j < chars.len() && chars[j] != '}' {
            let ch = chars[j];
            if ch == '"' || ch == '\'' || ch == '`' {
                skip_string(&mut j);
            } else if ch.is_ascii_alphabetic() || ch == '_' {
                let label = word_at(&mut j);
                found.push((metric.clone(), label));
            } else {
                j += 1;
            }
        }
        i = j;
    }
    found
}

/// Problems with `tenant` in one expression over the exporter-wide histograms: a `tenant`
/// matcher in their selector (they have no such label: a selection of tenants matches nothing,
/// All matches everything and pretends to filter), or a `by`/`on` list with `tenant` in an
/// expression that reads them (a line with an empty tenant, looking like one tenant's).
fn tenant_label_problems(expr: &str) -> Vec<String> {
    let mut problems: Vec<String> = exporter_wide_matchers(expr)
        .into_iter()
        .filter(|(_, label)| label == "tenant")
        .map(|(metric, _)| {
            format!("filters {metric} on `tenant`, which the exporter-wide histograms do not have")
        })
        .collect();
    let code = without_strings(expr);
    let reads_exporter_wide = code
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .any(|word| is_series_of(word, EXPORTER_WIDE_METRICS));
    if reads_exporter_wide {
        for (keyword, labels) in scan_report_use(expr).keeps {
            if labels.iter().any(|l| l == "tenant") {
                problems.push(format!(
                    "groups or joins the exporter-wide histograms {keyword} ({}), with `tenant`, which they do not have",
                    labels.join(", ")
                ));
            }
        }
    }
    problems
}

fn check_exporter_wide_tenant(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, expr) in expressions(d) {
        for problem in tenant_label_problems(&expr) {
            problems.push(format!("{at}: {problem}: {expr:?}"));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// PromQL parse check with promtool

fn promtool_program() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

fn promtool(args: &[&str]) -> Output {
    let program = promtool_program();
    match Command::new(&program).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: the PromQL check needs promtool. Install it with \
             `apt-get install prometheus` (Debian/Ubuntu), or set PROMTOOL=/path/to/promtool"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

/// Writes the expressions as recording rules and runs `promtool check rules` on them.
fn promtool_check(exprs: &[&str]) -> Result<(), String> {
    let mut file = tempfile::Builder::new()
        .suffix(".yml")
        .tempfile()
        .expect("temp file");
    let mut yaml = String::from("groups:\n  - name: dashboard_expressions\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        // a JSON string is a valid YAML double-quoted scalar
        yaml.push_str(&format!(
            "      - record: dashboard_expression_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    file.write_all(yaml.as_bytes()).expect("write temp file");
    let path = file.path().to_str().expect("utf-8 temp path").to_string();
    let output = promtool(&["check", "rules", "--lint=none", &path]);
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn check_promql(d: &Dashboard) -> Vec<String> {
    let exprs = expressions(d);
    let substituted: Vec<String> = exprs.iter().map(|(_, e)| substitute(e)).collect();
    let all: Vec<&str> = substituted.iter().map(String::as_str).collect();
    if promtool_check(&all).is_ok() {
        return vec![];
    }
    // Something failed: check one by one to name the culprits.
    exprs
        .iter()
        .zip(&substituted)
        .filter_map(|((at, expr), checked)| {
            promtool_check(&[checked]).err().map(|error| {
                format!(
                    "{at}: does not parse: {expr:?} (checked as {checked:?}): {}",
                    error.trim()
                )
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Tests on the real dashboards

#[test]
fn dashboards_parse_and_have_panels() {
    assert_clean("panels", |d| {
        if panels(&d.json).iter().any(|p| !targets(p).is_empty()) {
            vec![]
        } else {
            vec![format!("{}: no panel with a query", d.file)]
        }
    });
}

#[test]
fn schema_version_is_39_or_later() {
    assert_clean("schemaVersion", check_schema_version);
}

#[test]
fn uid_is_stable_and_unique() {
    assert_clean("uid", check_uid);
    let mut seen = BTreeMap::new();
    for d in dashboards() {
        let uid = str_of(&d.json, "uid").to_string();
        if let Some(other) = seen.insert(uid.clone(), d.file.clone()) {
            panic!("{} and {other} share the uid {uid:?}", d.file);
        }
    }
}

#[test]
fn no_inputs_or_ds_placeholders() {
    assert_clean("import placeholders", check_no_import_placeholders);
}

#[test]
fn datasource_variable_is_a_prometheus_datasource_variable() {
    assert_clean("datasource variable", check_datasource_variable);
}

#[test]
fn every_panel_and_variable_uses_the_datasource_variable() {
    assert_clean("datasource use", check_datasources);
}

#[test]
fn every_panel_with_queries_has_a_unit() {
    assert_clean("units", check_units);
}

#[test]
fn every_panel_has_a_description() {
    assert_clean("descriptions", check_descriptions);
}

#[test]
fn job_tenant_product_type_are_multi_select_label_values_variables_with_all() {
    assert_clean("filter variables", check_filter_variables);
}

#[test]
fn variables_are_used_with_regex_matchers_and_rates_use_rate_interval() {
    assert_clean("variable use", check_variable_use);
}

#[test]
fn panels_do_not_overlap() {
    assert_clean("layout", check_layout);
}

#[test]
fn recording_rules_read_by_dashboards_exist() {
    let defined = defined_recording_rules();
    assert!(
        !defined.is_empty(),
        "no `record:` found in prometheus/rules/*.yml"
    );
    assert_clean("recording rules", |d| {
        check_recording_rules_exist(d, &defined)
    });
}

#[test]
fn status_series_queries_keep_the_report_label() {
    assert_clean("report label", check_report_label);
}

#[test]
fn exporter_wide_histograms_are_not_filtered_or_grouped_by_tenant() {
    assert_clean("exporter-wide histograms", check_exporter_wide_tenant);
}

#[test]
fn every_expression_parses_with_promtool() {
    assert_clean("PromQL", check_promql);
}

// ------------------------------------------------------------------------------------------------
// The linter itself: it must catch violations, not just pass

#[test]
fn report_label_scan_tells_kept_merged_and_pinned_reports_apart() {
    // kept: by and on lists with report; an empty on () (a scalar-like join) needs none
    assert!(report_label_problems(
        r#"sum by (tenant, report) (rate(office365_activations_fetch_errors_total{job=~"$job"}[5m])) > on () group_left () x"#
    )
    .is_empty());
    assert!(report_label_problems(
        r#"histogram_quantile(0.9, sum by (report, le) (rate(office365_activations_refresh_duration_seconds_bucket[5m])))"#
    )
    .is_empty());
    assert_eq!(
        report_label_problems(
            "max by (job, tenant) (office365_activations_last_refresh_duration_seconds)"
        )
        .len(),
        1
    );
    // merged: a by list without report, also on a recording rule of the tenant_report level
    assert_eq!(
        report_label_problems(
            "max by (job, tenant) (office365_activations_report_refresh_timestamp_seconds)"
        )
        .len(),
        1
    );
    assert_eq!(
        report_label_problems(
            "sum(tenant_report:office365_activations_report_age_seconds) by (tenant)"
        )
        .len(),
        1
    );
    assert_eq!(
        report_label_problems("sum without (report) (office365_activations_refreshes_total)").len(),
        1
    );
    // pinned: one report selected by a literal matcher may be grouped without the label ...
    assert!(report_label_problems(
        r#"max by (job, tenant) (office365_activations_report_refresh_timestamp_seconds{report=~"user_counts|"} offset 7d)"#
    )
    .is_empty());
    // ... but not by a variable, and label values or other metrics do not count
    assert_eq!(
        report_label_problems(r#"max by (tenant) (office365_activations_up{report=~"$report"})"#)
            .len(),
        1
    );
    assert!(report_label_problems(
        r#"sum by (tenant) (office365_activations_activated_users{product_type="office365_activations_up"})"#
    )
    .is_empty());
    let found = scan_report_use(
        r#"office365_activations_up{tenant="a", report="user_detail"} or office365_activations_redirect_latency_seconds_count"#,
    );
    assert_eq!(
        found.pinned,
        BTreeSet::from(["office365_activations_up".to_string()])
    );
    assert_eq!(
        found.unpinned,
        BTreeSet::from(["office365_activations_redirect_latency_seconds_count".to_string()])
    );
}

#[test]
fn tenant_scan_finds_tenant_on_the_exporter_wide_histograms_only() {
    // by report over all tenants; per tenant from the tenant series
    assert!(tenant_label_problems(
        r#"histogram_quantile(0.9, sum by (report, le) (rate(office365_activations_refresh_duration_seconds_bucket{job=~"$job", report=~"$report"}[5m])))"#
    )
    .is_empty());
    assert!(tenant_label_problems(
        r#"sum by (tenant) (rate(office365_activations_tenant_redirect_latency_seconds_sum{tenant=~"$tenant"}[5m]))"#
    )
    .is_empty());
    assert!(tenant_label_problems(
        r#"topk(10, office365_activations_last_refresh_duration_seconds{tenant=~"$tenant"})"#
    )
    .is_empty());
    // a tenant matcher (not a label value that says tenant), a grouping by tenant
    assert_eq!(
        tenant_label_problems(
            r#"office365_activations_redirect_latency_seconds_count{report="tenant", tenant =~ "$tenant"}"#
        )
        .len(),
        1
    );
    assert_eq!(
        tenant_label_problems(
            r#"histogram_quantile(0.5, sum by (tenant, report, le) (rate(office365_activations_redirect_latency_seconds_bucket[5m])))"#
        )
        .len(),
        1
    );
    assert_eq!(
        exporter_wide_matchers(
            r#"office365_activations_refresh_duration_seconds_sum{job=~"a,b", report!="x"} / up{tenant="t"}"#
        ),
        vec![
            (
                "office365_activations_refresh_duration_seconds_sum".to_string(),
                "job".to_string()
            ),
            (
                "office365_activations_refresh_duration_seconds_sum".to_string(),
                "report".to_string()
            ),
        ]
    );
}

#[test]
fn substitution_and_variable_queries() {
    assert_eq!(
        substitute(
            r#"sum(rate(x{tenant=~"$tenant", job=~"${job:regex}"}[$__rate_interval])) * $__range_s"#
        ),
        r#"sum(rate(x{tenant=~".*", job=~".*"}[5m])) * 86400"#
    );
    assert_eq!(
        substitute("increase(x[$__range]) / $__interval_ms"),
        "increase(x[1d]) / 60000"
    );
    assert_eq!(
        variable_promql(r#"label_values(office365_activations_up{job=~"$job"}, tenant)"#)
            .as_deref(),
        Some(r#"office365_activations_up{job=~"$job"}"#)
    );
    assert_eq!(variable_promql("label_values(tenant)"), None);
    assert_eq!(
        variable_promql("query_result(max(x))").as_deref(),
        Some("max(x)")
    );
    assert_eq!(
        recording_rule_names(r#"a:b:c{instance="host:80"} / x[5m:1m] + ${v:csv}"#),
        BTreeSet::from(["a:b:c".to_string()])
    );
}

fn bad_dashboard() -> Dashboard {
    let json = json!({
        "__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}],
        "uid": "Xy7_Qk2P",
        "schemaVersion": 27,
        "templating": {"list": [
            {"name": "job", "type": "custom", "query": "office365-activations"},
            {"name": "tenant", "type": "query", "datasource": "${DS_PROMETHEUS}",
             "query": "label_values(tenant)", "multi": false, "includeAll": false},
            {"name": "report", "type": "custom", "query": "user_counts"}
        ]},
        "panels": [
            {"type": "timeseries", "title": "No description, no unit, DS placeholder", "id": 1,
             "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
             "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
             "targets": [{"refId": "A",
                          "expr": "sum(rate(office365_activations_refreshes_total{tenant=\"$tenant\", product_type=~\"$product\"}[5m])"}]},
            {"type": "stat", "title": "Overlapping, bad unit, unknown rule", "id": 1, "description": "d",
             "gridPos": {"x": 6, "y": 4, "w": 24, "h": 8},
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "fieldConfig": {"defaults": {"unit": "percentage"}},
             "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "prom-1"},
                          "expr": "tenant:office365_activations_no_such_rule{job=~\"$job\"}"},
                         {"refId": "B",
                          "expr": "sum by (tenant) (office365_activations_up{job=~\"$job\"})"},
                         {"refId": "C",
                          "expr": "histogram_quantile(0.9, sum by (tenant, report, le) (rate(office365_activations_refresh_duration_seconds_bucket{tenant=~\"$tenant\", report=~\"$report\"}[$__rate_interval])))"}]}
        ]
    });
    let text = serde_json::to_string_pretty(&json).unwrap();
    Dashboard {
        file: "bad.json".to_string(),
        text,
        json,
    }
}

#[test]
fn linter_reports_every_kind_of_violation_in_a_bad_dashboard() {
    let d = bad_dashboard();
    let defined = defined_recording_rules();
    let checks: Vec<(&str, Vec<String>)> = vec![
        ("schemaVersion", check_schema_version(&d)),
        ("uid", check_uid(&d)),
        ("import placeholders", check_no_import_placeholders(&d)),
        ("datasource variable", check_datasource_variable(&d)),
        ("datasource use", check_datasources(&d)),
        ("units", check_units(&d)),
        ("descriptions", check_descriptions(&d)),
        ("filter variables", check_filter_variables(&d)),
        ("variable use", check_variable_use(&d)),
        ("layout", check_layout(&d)),
        ("recording rules", check_recording_rules_exist(&d, &defined)),
        ("PromQL", check_promql(&d)),
        ("report label", check_report_label(&d)),
        ("exporter-wide histograms", check_exporter_wide_tenant(&d)),
    ];
    let silent: Vec<&str> = checks
        .iter()
        .filter(|(_, problems)| problems.is_empty())
        .map(|(name, _)| *name)
        .collect();
    assert!(
        silent.is_empty(),
        "checks that missed a violation in the bad dashboard: {silent:?}"
    );

    let all: Vec<&String> = checks.iter().flat_map(|(_, problems)| problems).collect();
    let expect = |needle: &str| {
        assert!(
            all.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning {needle:?}; got:\n  {}",
            all.iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    };
    // every message names the dashboard and, for panels, the panel title
    expect("bad.json: panel \"No description, no unit, DS placeholder\" (id 1): no description");
    expect("no unit");
    expect("unknown unit \"percentage\"");
    expect("__inputs");
    expect("${DS_...}");
    expect("must be multi-select");
    expect("allValue must be");
    expect("$tenant must be used in a regex matcher");
    expect("uses $product, which is not a variable");
    expect("rate window [5m] must be [$__rate_interval]");
    expect("overlaps");
    expect("id 1 also used");
    expect("wider than the 24-column grid");
    expect("reads tenant:office365_activations_no_such_rule");
    expect("does not parse");
    expect("target A: datasource is");
    expect("no `datasource` template variable");
    expect("aggregates or joins office365_activations_up by (tenant) without `report`");
    expect("without filtering on $report");
    expect("filters office365_activations_refresh_duration_seconds_bucket on `tenant`");
    expect("groups or joins the exporter-wide histograms by (tenant, report, le)");
}
