//! The activations report as data, and the parser that turns Graph's CSV into it.
//!
//! Pure functions, no I/O. The parser is strict about what matters (every required column, integer
//! counts, a valid date) and lenient about what Graph is known to vary (a UTF-8 byte order mark,
//! CRLF or LF, quoted fields, reordered or extra columns, no Shared Computer Activation column, a
//! header-only file). Anything it rejects is rejected whole, so the cache keeps the last good report.
//!
//! [`parse_json`] reads the beta JSON form of the same report into the same [`ActivationReport`],
//! so the metrics are identical whichever format was asked for.

use chrono::NaiveDate;

/// One download of the report, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivationReport {
    /// The day the report covers (Report Refresh Date, UTC). `None` for a header-only report,
    /// which a tenant without Office licences gets.
    pub refresh_date: Option<NaiveDate>,
    /// One entry per product type, in the order Graph listed them.
    pub products: Vec<ProductCounts>,
}

/// The counts of one product type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductCounts {
    /// The Product Type column, verbatim (an opaque string: Graph renames products over time).
    pub product_type: String,
    /// Users assigned a licence that includes the product.
    pub assigned: u64,
    /// Users who activated the product on at least one device.
    pub activated: u64,
    /// Users activating it through shared computer activation; `None` when the report (older
    /// tenants and docs) has no such column.
    pub shared_computer_activation: Option<u64>,
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
        /// 1-based line number of the offending record, as a human counts in the file.
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

const REFRESH_DATE: &str = "Report Refresh Date";
const PRODUCT_TYPE: &str = "Product Type";
const ASSIGNED: &str = "Assigned";
const ACTIVATED: &str = "Activated";
const SHARED: &str = "Shared Computer Activation";

/// Parses the CSV body of the Office activations report.
pub fn parse_csv(body: &[u8]) -> Result<ActivationReport, ParseError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(ParseError::NotCsv("empty body".into())),
        Some(b'<') => return Err(ParseError::NotCsv("body looks like HTML or XML".into())),
        Some(b'{') | Some(b'[') => return Err(ParseError::NotCsv("body looks like JSON".into())),
        Some(_) => {}
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| ParseError::NotCsv(format!("unreadable header row: {e}")))?
        .clone();
    let header_line = headers.iter().collect::<Vec<_>>().join(",");
    let column = |name: &'static str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseError::MissingColumn(name, header_line.clone()))
    };
    let date_col = column(REFRESH_DATE)?;
    let product_col = column(PRODUCT_TYPE)?;
    let assigned_col = column(ASSIGNED)?;
    let activated_col = column(ACTIVATED)?;
    let shared_col = column(SHARED).ok();

    let mut report = ActivationReport {
        refresh_date: None,
        products: Vec::new(),
    };
    for record in reader.records() {
        let record = record.map_err(|e| ParseError::InvalidValue {
            row: e.position().map_or(0, |p| p.line()),
            detail: format!("malformed CSV record: {e}"),
        })?;
        let row = record.position().map_or(0, |p| p.line());
        let invalid = |detail: String| ParseError::InvalidValue { row, detail };
        let field = |col: usize| record.get(col).unwrap_or("");
        let count = |col: usize, name: &str| {
            let raw = field(col);
            raw.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "{name} must be a non-negative integer, got {raw:?}"
                ))
            })
        };

        let raw_date = field(date_col);
        let date = NaiveDate::parse_from_str(raw_date, "%Y-%m-%d").map_err(|_| {
            invalid(format!(
                "{REFRESH_DATE} must be YYYY-MM-DD, got {raw_date:?}"
            ))
        })?;
        // All rows carry the same date; should they ever differ, the newest is the report's date.
        report.refresh_date = report.refresh_date.max(Some(date));

        let product_type = field(product_col);
        if product_type.is_empty() {
            return Err(invalid(format!("{PRODUCT_TYPE} is empty")));
        }
        if report
            .products
            .iter()
            .any(|p| p.product_type == product_type)
        {
            return Err(invalid(format!(
                "{PRODUCT_TYPE} {product_type:?} appears twice"
            )));
        }
        let shared_computer_activation = match shared_col {
            Some(col) if !field(col).is_empty() => Some(count(col, SHARED)?),
            _ => None,
        };
        report.products.push(ProductCounts {
            product_type: product_type.to_owned(),
            assigned: count(assigned_col, ASSIGNED)?,
            activated: count(activated_col, ACTIVATED)?,
            shared_computer_activation,
        });
    }
    Ok(report)
}

/// One entry of the JSON report's `value`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRow {
    report_refresh_date: Option<String>,
    product_type: Option<String>,
    assigned: Option<serde_json::Value>,
    activated: Option<serde_json::Value>,
    #[serde(default)]
    shared_computer_activation: Option<serde_json::Value>,
}

/// The JSON report: `{"value":[...]}`.
#[derive(serde::Deserialize)]
struct JsonReport {
    value: Vec<JsonRow>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// Parses the beta JSON form of the report
/// (`{"value":[{"reportRefreshDate":"2017-09-01","productType":"Microsoft 365 Apps for enterprise","assigned":2679,...}]}`).
///
/// Graph spells product types in mixed case here and in upper case in the CSV; they are upper-cased
/// so that the `product_type` label is the same whichever format is used. Counts may arrive as
/// numbers or numeric strings; the same rules as the CSV apply (non-negative integers, a valid
/// date, no duplicate product, `sharedComputerActivation` optional).
pub fn parse_json(body: &[u8]) -> Result<ActivationReport, ParseError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let parsed: JsonReport = serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        ParseError::NotJson(format!("{e} (body starts with {start:?})"))
    })?;
    if parsed.next_link.is_some() {
        return Err(ParseError::NotJson(
            "the report is paged (@odata.nextLink); one page was expected".into(),
        ));
    }
    let mut report = ActivationReport {
        refresh_date: None,
        products: Vec::new(),
    };
    for (i, row) in parsed.value.into_iter().enumerate() {
        let row_number = i as u64 + 1;
        let invalid = |detail: String| ParseError::InvalidValue {
            row: row_number,
            detail,
        };
        let count = |value: &Option<serde_json::Value>,
                     name: &str|
         -> Result<Option<u64>, ParseError> {
            match value {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                    invalid(format!("{name} must be a non-negative integer, got {n}"))
                }),
                Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                    invalid(format!("{name} must be a non-negative integer, got {s:?}"))
                }),
                Some(other) => Err(invalid(format!(
                    "{name} must be a non-negative integer, got {other}"
                ))),
            }
        };
        let required = |value: Option<u64>, name: &'static str| {
            value.ok_or_else(|| invalid(format!("{name} is missing")))
        };
        let raw_date = row.report_refresh_date.unwrap_or_default();
        let date = NaiveDate::parse_from_str(raw_date.trim(), "%Y-%m-%d").map_err(|_| {
            invalid(format!(
                "reportRefreshDate must be YYYY-MM-DD, got {raw_date:?}"
            ))
        })?;
        report.refresh_date = report.refresh_date.max(Some(date));
        let product_type = row.product_type.unwrap_or_default().trim().to_uppercase();
        if product_type.is_empty() {
            return Err(invalid("productType is empty".into()));
        }
        if report
            .products
            .iter()
            .any(|p| p.product_type == product_type)
        {
            return Err(invalid(format!(
                "productType {product_type:?} appears twice"
            )));
        }
        report.products.push(ProductCounts {
            product_type,
            assigned: required(count(&row.assigned, "assigned")?, "assigned")?,
            activated: required(count(&row.activated, "activated")?, "activated")?,
            shared_computer_activation: count(
                &row.shared_computer_activation,
                "sharedComputerActivation",
            )?,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Option<NaiveDate> {
        Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn product(name: &str, assigned: u64, activated: u64, shared: Option<u64>) -> ProductCounts {
        ProductCounts {
            product_type: name.into(),
            assigned,
            activated,
            shared_computer_activation: shared,
        }
    }

    #[test]
    fn parses_graph_csv_with_bom_and_crlf() {
        let body = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n\
2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,2679,1710,1024\r\n\
2026-11-25,PROJECT ONLINE DESKTOP CLIENT,120,88,0\r\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(report.refresh_date, date("2026-11-25"));
        assert_eq!(
            report.products,
            vec![
                product("MICROSOFT 365 APPS FOR ENTERPRISE", 2679, 1710, Some(1024)),
                product("PROJECT ONLINE DESKTOP CLIENT", 120, 88, Some(0)),
            ]
        );
    }

    #[test]
    fn parses_lf_without_trailing_newline() {
        let body = b"Report Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\n2026-11-25,VISIO ONLINE PLAN 2,5,3,1";
        let report = parse_csv(body).unwrap();
        assert_eq!(
            report.products,
            vec![product("VISIO ONLINE PLAN 2", 5, 3, Some(1))]
        );
    }

    #[test]
    fn reads_columns_by_name_whatever_their_order_and_ignores_unknown_ones() {
        let body = b"\xEF\xBB\xBFActivated,New Column,Product Type,Shared Computer Activation,Assigned,Report Refresh Date\r\n\
10,x,\"MICROSOFT 365 APPS FOR BUSINESS\",2,30,2026-11-24\r\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(report.refresh_date, date("2026-11-24"));
        assert_eq!(
            report.products,
            vec![product("MICROSOFT 365 APPS FOR BUSINESS", 30, 10, Some(2))]
        );
    }

    #[test]
    fn quoted_fields_may_hold_commas_and_quotes() {
        let body = b"Report Refresh Date,Product Type,Assigned,Activated\r\n\"2026-11-25\",\"OFFICE, \"\"PRO\"\" PLUS\",\"7\",\"6\"\r\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(
            report.products,
            vec![product("OFFICE, \"PRO\" PLUS", 7, 6, None)]
        );
    }

    #[test]
    fn four_column_report_has_no_shared_computer_counts() {
        let body = b"Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,Office 365 ProPlus,3,2\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(
            report.products,
            vec![product("Office 365 ProPlus", 3, 2, None)]
        );
    }

    #[test]
    fn header_only_report_is_valid_and_empty() {
        let body = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(report.refresh_date, None);
        assert!(report.products.is_empty());
    }

    #[test]
    fn missing_required_column_is_rejected() {
        let body = b"Report Refresh Date,Product Type,Assigned\n2026-11-25,X,3\n";
        let err = parse_csv(body).unwrap_err();
        assert!(
            matches!(err, ParseError::MissingColumn("Activated", _)),
            "{err}"
        );
        assert_eq!(err.reason(), "missing_column");
    }

    #[test]
    fn bom_does_not_hide_the_first_column() {
        // A parser that matches the first header by exact name misses it behind the BOM.
        let body =
            b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated\n2026-11-25,X,3,1\n";
        assert_eq!(parse_csv(body).unwrap().refresh_date, date("2026-11-25"));
    }

    #[test]
    fn negative_fractional_or_empty_counts_are_rejected() {
        for bad in ["-1", "1.5", "", "12a", "99999999999999999999999"] {
            let body = format!(
                "Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,X,{bad},1\n"
            );
            let err = parse_csv(body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "invalid_value", "{bad:?}: {err}");
            assert!(err.to_string().contains("Assigned"), "{err}");
        }
    }

    #[test]
    fn bad_dates_are_rejected() {
        for bad in ["2026-13-01", "25/11/2026", "", "2026-11-25T00:00:00Z"] {
            let body =
                format!("Report Refresh Date,Product Type,Assigned,Activated\n{bad},X,1,1\n");
            let err = parse_csv(body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "invalid_value", "{bad:?}: {err}");
        }
    }

    #[test]
    fn html_json_and_empty_bodies_are_not_csv() {
        for body in [
            &b"<!DOCTYPE html><html><body>Sign in</body></html>"[..],
            b"\xEF\xBB\xBF  <?xml version=\"1.0\"?><Error/>",
            b"{\"error\":{\"code\":\"UnknownError\"}}",
            b"",
            b"\r\n",
        ] {
            let err = parse_csv(body).unwrap_err();
            assert_eq!(err.reason(), "not_csv", "{err}");
        }
    }

    #[test]
    fn ragged_rows_and_duplicate_products_are_rejected() {
        let ragged = b"Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,X,1\n";
        assert_eq!(parse_csv(ragged).unwrap_err().reason(), "invalid_value");
        let dup = b"Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,X,1,1\n2026-11-25,X,2,2\n";
        assert_eq!(parse_csv(dup).unwrap_err().reason(), "invalid_value");
    }

    #[test]
    fn error_names_the_row() {
        let body = b"Report Refresh Date,Product Type,Assigned,Activated\n2026-11-25,A,1,1\n2026-11-25,B,x,1\n";
        let err = parse_csv(body).unwrap_err();
        assert_eq!(
            err,
            ParseError::InvalidValue {
                row: 3,
                detail: "Assigned must be a non-negative integer, got \"x\"".into()
            }
        );
    }

    #[test]
    fn json_report_parses_into_the_same_report_as_the_csv() {
        let json = br#"{"@odata.context":"https://graph.microsoft.com/beta/$metadata#Collection(microsoft.graph.office365ActivationCounts)","value":[{"reportRefreshDate":"2026-11-25","productType":"Microsoft 365 Apps for enterprise","assigned":2679,"activated":1710,"sharedComputerActivation":1024},{"reportRefreshDate":"2026-11-25","productType":"Project Online Desktop Client","assigned":"120","activated":88,"sharedComputerActivation":0}]}"#;
        let csv = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation\r\n\
2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,2679,1710,1024\r\n\
2026-11-25,PROJECT ONLINE DESKTOP CLIENT,120,88,0\r\n";
        assert_eq!(parse_json(json).unwrap(), parse_csv(csv).unwrap());
        let empty = parse_json(br#"{"value":[]}"#).unwrap();
        assert_eq!((empty.refresh_date, empty.products.len()), (None, 0));
        let no_shared = parse_json(
            br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"Visio Online Plan 2","assigned":5,"activated":3}]}"#,
        )
        .unwrap();
        assert_eq!(
            no_shared.products,
            vec![product("VISIO ONLINE PLAN 2", 5, 3, None)]
        );
    }

    #[test]
    fn bad_json_reports_are_rejected_whole() {
        for (body, reason) in [
            (&b"Report Refresh Date,Product Type\n"[..], "invalid_response"),
            (b"{\"error\":{\"code\":\"x\"}}", "invalid_response"),
            (b"{\"value\":[],\"@odata.nextLink\":\"https://x\"}", "invalid_response"),
            (b"{\"value\":[{\"reportRefreshDate\":\"2026-11-25\",\"productType\":\"A\",\"assigned\":-1,\"activated\":1}]}", "invalid_value"),
            (b"{\"value\":[{\"reportRefreshDate\":\"2026-11-25\",\"productType\":\"A\",\"assigned\":1.5,\"activated\":1}]}", "invalid_value"),
            (b"{\"value\":[{\"reportRefreshDate\":\"2026-11-25\",\"productType\":\"A\",\"activated\":1}]}", "invalid_value"),
            (b"{\"value\":[{\"reportRefreshDate\":\"25/11/2026\",\"productType\":\"A\",\"assigned\":1,\"activated\":1}]}", "invalid_value"),
            (b"{\"value\":[{\"reportRefreshDate\":\"2026-11-25\",\"productType\":\"a\",\"assigned\":1,\"activated\":1},{\"reportRefreshDate\":\"2026-11-25\",\"productType\":\"A\",\"assigned\":1,\"activated\":1}]}", "invalid_value"),
        ] {
            let err = parse_json(body).unwrap_err();
            assert_eq!(err.reason(), reason, "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
