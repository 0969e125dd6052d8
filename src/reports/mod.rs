//! The report kinds: what each asks Graph for, how it parses, what it exposes.
//!
//! Microsoft 365's "Microsoft 365 Apps activations" report has three views, each its own Graph
//! report API. Each lives in one file here, in the spirit of node_exporter's one collector per
//! file: its Graph function name, its metric families (names and HELP), and its [`Aggregate`]:
//! a pure, streaming parser of the CSV (fed in chunks, as the download arrives) and of the beta
//! JSON (one page at a time) into the numbers it exports, and their encoding as sample lines.
//! Adding a fourth kind is one new file plus its line in [`KINDS`].
//!
//! Nothing here does I/O; [`crate::graph`] feeds bytes in, [`crate::tenant`] keeps the result.
//! Anything a parser rejects is rejected whole, so the tenant keeps the last good report.

pub mod activation_counts;
pub mod csv;
pub mod json;
pub mod user_counts;
pub mod user_detail;

use std::fmt;

use chrono::NaiveDate;

/// One report kind, described as data: every kind is a `static` of this type in its own file.
pub struct Kind {
    /// The config name (`--reports`, `reports:`) and the `report` label value.
    pub name: &'static str,
    /// The Graph function, e.g. `getOffice365ActivationsUserCounts`.
    pub api: &'static str,
    /// Enabled when neither `--reports` nor the config file says otherwise.
    pub default_enabled: bool,
    /// What one row of the report is, for logs and the landing page ("products", "users").
    pub rows: &'static str,
    /// Its body can be tens of MB (it is streamed): capped by `--graph.max-user-detail-size`
    /// instead of `--graph.max-report-size`.
    pub large: bool,
    /// The metric families it exposes, in exposition order.
    pub families: &'static [Family],
    /// A fresh parser for one refresh.
    pub parser: fn() -> Box<dyn Parser>,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Kind {}

/// A report kind as configuration and code pass it around.
pub type ReportKind = &'static Kind;

/// Every kind, in exposition order.
pub static KINDS: &[ReportKind] = &[
    &user_counts::KIND,
    &activation_counts::KIND,
    &user_detail::KIND,
];

/// The kinds enabled by default.
pub fn default_kinds() -> Vec<ReportKind> {
    KINDS
        .iter()
        .copied()
        .filter(|k| k.default_enabled)
        .collect()
}

/// The kind with config name `name`.
pub fn by_name(name: &str) -> Option<ReportKind> {
    KINDS.iter().copied().find(|k| k.name == name.trim())
}

/// The config names of every kind, for error messages.
pub fn names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// One gauge family of a kind.
#[derive(Debug)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Its HELP text (the exporter appends how it is cached).
    pub help: &'static str,
}

/// A parsed report, encoded for the exposition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The Report Refresh Date; `None` for a report without rows.
    pub refresh_date: Option<NaiveDate>,
    /// Rows read (products, or users for the user detail), for logs and the landing page.
    pub rows: u64,
    /// Sample lines, one string per entry of the kind's [`Kind::families`].
    pub families: Vec<String>,
}

/// Feeds one refresh's bytes into a kind's aggregate. Made by [`Kind::parser`].
pub trait Parser: Send {
    /// The next chunk of a CSV body, in order.
    fn csv(&mut self, chunk: &[u8]) -> Result<(), ParseError>;
    /// One whole page of the beta JSON; returns the page's `@odata.nextLink`, if any.
    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError>;
    /// Everything was fed: the report, encoded with the `tenant` label.
    fn finish(self: Box<Self>, tenant: &str) -> Result<Encoded, ParseError>;
    /// Forgets everything fed so far: the body is read again from its start (a download cut off
    /// by its connection, fetched again).
    fn restart(&mut self);
}

/// What a kind computes from its rows, fed by [`Stream`]: the one thing each kind's file
/// implements.
pub trait Aggregate: Default + Send + 'static {
    /// Finds the columns it needs in the CSV header row (by name: Graph reorders them).
    fn columns(&mut self, header: &csv::Header) -> Result<(), ParseError>;
    /// One CSV record.
    fn csv_row(&mut self, row: &csv::Row<'_>) -> Result<(), ParseError>;
    /// One JSON page; returns its `@odata.nextLink`.
    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError>;
    /// Rows read so far.
    fn rows(&self) -> u64;
    /// The report's date, once known.
    fn refresh_date(&self) -> Option<NaiveDate>;
    /// Sample lines, one per family; `tenant` is already escaped for a label value.
    fn encode(&self, tenant: &str) -> Vec<String>;
}

/// A [`Parser`] for any [`Aggregate`]: CSV through the streaming reader, JSON page by page.
#[derive(Default)]
pub struct Stream<A: Aggregate> {
    /// The CSV reader; idle when the report comes as JSON.
    csv: csv::CsvStream,
    /// Whether JSON pages were fed (else the body is CSV, possibly empty).
    fed_json: bool,
    /// The numbers.
    aggregate: A,
}

impl<A: Aggregate> Stream<A> {
    /// Feeds a CSV chunk.
    pub fn feed_csv(&mut self, chunk: &[u8]) -> Result<(), ParseError> {
        self.csv.feed(chunk, &mut Sink(&mut self.aggregate))
    }

    /// Feeds one JSON page; returns its `@odata.nextLink`.
    pub fn feed_json(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        self.fed_json = true;
        let page = page.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(page);
        self.aggregate.json_page(page)
    }

    /// Ends the body (an empty CSV body is refused here) and hands back the aggregate.
    pub fn end(mut self) -> Result<A, ParseError> {
        if !self.fed_json {
            self.csv.end(&mut Sink(&mut self.aggregate))?;
        }
        Ok(self.aggregate)
    }

    /// Parses a whole CSV body: what tests, benchmarks and fuzzers call.
    pub fn parse_csv(body: &[u8]) -> Result<A, ParseError> {
        let mut stream = Self::default();
        stream.feed_csv(body)?;
        stream.end()
    }

    /// Parses JSON pages in order (each but the last with a nextLink, which is not followed).
    pub fn parse_json_pages<'a>(
        pages: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<A, ParseError> {
        let mut stream = Self::default();
        for page in pages {
            stream.feed_json(page)?;
        }
        stream.end()
    }
}

/// Adapts an [`Aggregate`] to the CSV reader's callbacks.
struct Sink<'a, A>(&'a mut A);

impl<A: Aggregate> csv::Rows for Sink<'_, A> {
    fn header(&mut self, header: &csv::Header) -> Result<(), ParseError> {
        self.0.columns(header)
    }

    fn row(&mut self, row: &csv::Row<'_>) -> Result<(), ParseError> {
        self.0.csv_row(row)
    }
}

impl<A: Aggregate> Parser for Stream<A> {
    fn csv(&mut self, chunk: &[u8]) -> Result<(), ParseError> {
        self.feed_csv(chunk)
    }

    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        self.feed_json(page)
    }

    fn finish(self: Box<Self>, tenant: &str) -> Result<Encoded, ParseError> {
        let aggregate = self.end()?;
        let mut label = String::new();
        escape_label(tenant, &mut label);
        Ok(Encoded {
            refresh_date: aggregate.refresh_date(),
            rows: aggregate.rows(),
            families: aggregate.encode(&label),
        })
    }

    fn restart(&mut self) {
        *self = Stream::default();
    }
}

/// Why a report body was rejected. Each variant is one bounded `reason` label value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The body is not CSV at all (an HTML error page, a JSON error, an empty body).
    #[error("report is not CSV: {0}")]
    NotCsv(String),
    /// The body is not the JSON report (when JSON was asked for).
    #[error("report is not the expected JSON: {0}")]
    NotJson(String),
    /// A column the exporter needs is absent from the header row.
    #[error("report has no {0:?} column (header: {1})")]
    MissingColumn(&'static str, String),
    /// A row holds a value that is not what its column promises.
    #[error("report row {row}: {detail}")]
    InvalidValue {
        /// 1-based number of the offending record, counting the header row as 1 (the line a
        /// human finds it on, in a file without line breaks inside fields).
        row: u64,
        /// What is wrong, naming the column and the value.
        detail: String,
    },
}

impl ParseError {
    /// The `reason` label value for `office365_activations_fetch_errors_total{stage="parse"}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NotCsv(_) => "not_csv",
            ParseError::NotJson(_) => "invalid_response",
            ParseError::MissingColumn(..) => "missing_column",
            ParseError::InvalidValue { .. } => "invalid_value",
        }
    }
}

/// Escapes a label value for the text format.
pub fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Parses a `YYYY-MM-DD` day; `what` names the column for the error.
pub fn parse_date(raw: &str, what: &str, row: u64) -> Result<NaiveDate, ParseError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| ParseError::InvalidValue {
        row,
        detail: format!("{what} must be YYYY-MM-DD, got {raw:?}"),
    })
}

/// Parses a non-negative integer count; `what` names the column for the error.
pub fn parse_count(raw: &str, what: &str, row: u64) -> Result<u64, ParseError> {
    raw.parse::<u64>().map_err(|_| ParseError::InvalidValue {
        row,
        detail: format!("{what} must be a non-negative integer, got {raw:?}"),
    })
}

/// Unix time of a day's UTC midnight.
pub fn midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for kind in KINDS {
            assert_eq!(by_name(kind.name), Some(*kind));
            assert_eq!(KINDS.iter().filter(|k| k.name == kind.name).count(), 1);
            assert_eq!(KINDS.iter().filter(|k| k.api == kind.api).count(), 1);
        }
        assert_eq!(by_name("user_count"), None);
        let defaults: Vec<_> = default_kinds().iter().map(|k| k.name).collect();
        assert_eq!(defaults, ["user_counts", "activation_counts"]);
    }

    #[test]
    fn family_names_are_distinct_across_kinds() {
        let mut names: Vec<_> = KINDS
            .iter()
            .flat_map(|k| k.families.iter().map(|f| f.name))
            .collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total);
    }
}
