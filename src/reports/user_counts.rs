//! The user counts report (`getOffice365ActivationsUserCounts`): per product type, users
//! assigned a licence and users who activated it. The report the exporter started with.
//!
//! CSV: `Report Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation` (older
//! tenants lack the last column). Beta JSON: `{"value":[{"reportRefreshDate","productType",
//! "assigned","activated","sharedComputerActivation"}]}`. Both parse into the same
//! [`ActivationReport`], so the metrics are identical whichever format was asked for.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::csv::{Header, Row};
use super::{json, Aggregate, Family, Kind, ParseError, Stream};

/// `office365_activations_assigned_users`.
pub const ASSIGNED: &str = "office365_activations_assigned_users";
/// `office365_activations_activated_users`.
pub const ACTIVATED: &str = "office365_activations_activated_users";
/// `office365_activations_shared_computer_activated_users`.
pub const SHARED: &str = "office365_activations_shared_computer_activated_users";

/// The kind.
pub static KIND: Kind = Kind {
    name: "user_counts",
    api: "getOffice365ActivationsUserCounts",
    default_enabled: true,
    large: false,
    rows: "products",
    families: &[
        Family {
            name: ASSIGNED,
            help: "Users assigned a licence that includes the product (Assigned column of Graph's Office activations user counts report).",
        },
        Family {
            name: ACTIVATED,
            help: "Users who activated the product on at least one device (Activated column of Graph's Office activations user counts report).",
        },
        Family {
            name: SHARED,
            help: "Users who activated the product through shared computer activation (Shared Computer Activation column, when the report has it).",
        },
    ],
    parser: || Box::new(Stream::<Counts>::default()),
};

/// One download of the report, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

const REFRESH_DATE: &str = "Report Refresh Date";
const PRODUCT_TYPE: &str = "Product Type";
const ASSIGNED_COLUMN: &str = "Assigned";
const ACTIVATED_COLUMN: &str = "Activated";
const SHARED_COLUMN: &str = "Shared Computer Activation";

/// Column positions in the CSV.
#[derive(Debug, Default)]
struct Columns {
    date: usize,
    product: usize,
    assigned: usize,
    activated: usize,
    shared: Option<usize>,
}

/// The report as it is read.
#[derive(Debug, Default)]
pub struct Counts {
    /// Where the columns are (CSV only).
    columns: Columns,
    /// The rows so far.
    report: ActivationReport,
}

impl Counts {
    /// Adds a product, refusing a second row for the same product type.
    fn push(
        &mut self,
        product: ProductCounts,
        date: NaiveDate,
        row: u64,
        what: &str,
    ) -> Result<(), ParseError> {
        // All rows carry the same date; should they ever differ, the newest is the report's date.
        self.report.refresh_date = self.report.refresh_date.max(Some(date));
        if self
            .report
            .products
            .iter()
            .any(|p| p.product_type == product.product_type)
        {
            return Err(ParseError::InvalidValue {
                row,
                detail: format!("{what} {:?} appears twice", product.product_type),
            });
        }
        self.report.products.push(product);
        Ok(())
    }
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

impl Aggregate for Counts {
    fn columns(&mut self, header: &Header) -> Result<(), ParseError> {
        self.columns = Columns {
            date: header.column(REFRESH_DATE)?,
            product: header.column(PRODUCT_TYPE)?,
            assigned: header.column(ASSIGNED_COLUMN)?,
            activated: header.column(ACTIVATED_COLUMN)?,
            shared: header.optional(SHARED_COLUMN),
        };
        Ok(())
    }

    fn csv_row(&mut self, row: &Row<'_>) -> Result<(), ParseError> {
        let c = &self.columns;
        let date = super::parse_date(row.get(c.date), REFRESH_DATE, row.number)?;
        let product_type = row.get(c.product);
        if product_type.is_empty() {
            return Err(row.invalid(format!("{PRODUCT_TYPE} is empty")));
        }
        let shared_computer_activation = match c.shared {
            Some(col) if !row.get(col).is_empty() => Some(row.count(col, SHARED_COLUMN)?),
            _ => None,
        };
        let product = ProductCounts {
            product_type: product_type.to_owned(),
            assigned: row.count(c.assigned, ASSIGNED_COLUMN)?,
            activated: row.count(c.activated, ACTIVATED_COLUMN)?,
            shared_computer_activation,
        };
        self.push(product, date, row.number, PRODUCT_TYPE)
    }

    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        let page = json::page::<JsonRow>(page)?;
        json::single(page.next_link)?;
        for row in page.value {
            let number = self.report.products.len() as u64 + 1;
            let date = json::date(&row.report_refresh_date, "reportRefreshDate", number)?;
            let product = ProductCounts {
                product_type: json::product_type(row.product_type, number)?,
                assigned: json::required(&row.assigned, "assigned", number)?,
                activated: json::required(&row.activated, "activated", number)?,
                shared_computer_activation: json::count(
                    &row.shared_computer_activation,
                    "sharedComputerActivation",
                    number,
                )?,
            };
            self.push(product, date, number, "productType")?;
        }
        Ok(None)
    }

    fn rows(&self) -> u64 {
        self.report.products.len() as u64
    }

    fn refresh_date(&self) -> Option<NaiveDate> {
        self.report.refresh_date
    }

    fn encode(&self, tenant: &str) -> Vec<String> {
        encode_families(tenant, &self.report)
    }
}

/// Sample lines of [`KIND`]'s families; `tenant` is an escaped label value.
fn encode_families(tenant: &str, report: &ActivationReport) -> Vec<String> {
    let mut families = vec![String::new(); 3];
    for product in &report.products {
        let mut labels = format!("{{tenant=\"{tenant}\",product_type=\"");
        super::escape_label(&product.product_type, &mut labels);
        labels.push_str("\"}");
        let _ = writeln!(families[0], "{ASSIGNED}{labels} {}", product.assigned);
        let _ = writeln!(families[1], "{ACTIVATED}{labels} {}", product.activated);
        if let Some(shared) = product.shared_computer_activation {
            let _ = writeln!(families[2], "{SHARED}{labels} {shared}");
        }
    }
    families
}

/// Sample lines of the report's gauges for `tenant` (raw, escaped here), one per family.
pub fn encode(tenant: &str, report: &ActivationReport) -> Vec<String> {
    let mut label = String::new();
    super::escape_label(tenant, &mut label);
    encode_families(&label, report)
}

/// Parses the CSV body of the report.
pub fn parse_csv(body: &[u8]) -> Result<ActivationReport, ParseError> {
    Stream::<Counts>::parse_csv(body).map(|c| c.report)
}

/// Parses the beta JSON form of the report (one page).
pub fn parse_json(body: &[u8]) -> Result<ActivationReport, ParseError> {
    Stream::<Counts>::parse_json_pages([body]).map(|c| c.report)
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
