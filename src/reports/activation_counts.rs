//! The activation counts report (`getOffice365ActivationCounts`): per product type, the devices
//! Office is activated on, by platform. Answers "on which platforms is Office activated?".
//!
//! CSV: `Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile`. Beta JSON:
//! `{"value":[{"reportRefreshDate","productType","windows","mac","android","ios",
//! "windows10Mobile"}]}`. Windows 10 Mobile is a retired platform and optional (a report without
//! the column exports no such series); the other four are required.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::csv::{Header, Row};
use super::{json, Aggregate, Family, Kind, ParseError, Stream};

/// `office365_activations_activated_devices{tenant,product_type,platform}`.
pub const DEVICES: &str = "office365_activations_activated_devices";

/// The kind.
pub static KIND: Kind = Kind {
    name: "activation_counts",
    api: "getOffice365ActivationCounts",
    default_enabled: true,
    large: false,
    rows: "products",
    families: &[Family {
        name: DEVICES,
        help: "Devices the product is activated on, by platform (windows, mac, android, ios, windows_10_mobile; Graph's Office activation counts report).",
    }],
    parser: || Box::new(Stream::<Platforms>::default()),
};

/// The platforms, as `(platform label value, CSV column, JSON field, required)`, in exposition
/// order.
pub const PLATFORMS: [(&str, &str, &str, bool); 5] = [
    ("windows", "Windows", "windows", true),
    ("mac", "Mac", "mac", true),
    ("android", "Android", "android", true),
    ("ios", "iOS", "ios", true),
    (
        "windows_10_mobile",
        "Windows 10 Mobile",
        "windows10Mobile",
        false,
    ),
];

const REFRESH_DATE: &str = "Report Refresh Date";
const PRODUCT_TYPE: &str = "Product Type";

/// The devices of one product type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductDevices {
    /// The Product Type, upper case.
    pub product_type: String,
    /// Activated devices per entry of [`PLATFORMS`]; `None` where the report lacks the platform.
    pub devices: [Option<u64>; 5],
}

/// The report as it is read.
#[derive(Debug, Default)]
pub struct Platforms {
    /// CSV positions of the date, product and each platform column.
    columns: (usize, usize, [Option<usize>; 5]),
    /// The report's date.
    pub refresh_date: Option<NaiveDate>,
    /// One entry per product type, in report order.
    pub products: Vec<ProductDevices>,
}

impl Platforms {
    fn push(
        &mut self,
        product: ProductDevices,
        date: NaiveDate,
        row: u64,
    ) -> Result<(), ParseError> {
        self.refresh_date = self.refresh_date.max(Some(date));
        if self
            .products
            .iter()
            .any(|p| p.product_type == product.product_type)
        {
            return Err(ParseError::InvalidValue {
                row,
                detail: format!("product type {:?} appears twice", product.product_type),
            });
        }
        self.products.push(product);
        Ok(())
    }
}

/// One entry of the JSON report's `value`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRow {
    report_refresh_date: Option<String>,
    product_type: Option<String>,
    windows: Option<serde_json::Value>,
    mac: Option<serde_json::Value>,
    android: Option<serde_json::Value>,
    ios: Option<serde_json::Value>,
    #[serde(rename = "windows10Mobile")]
    windows_10_mobile: Option<serde_json::Value>,
}

impl Aggregate for Platforms {
    fn columns(&mut self, header: &Header) -> Result<(), ParseError> {
        let mut platforms = [None; 5];
        for (slot, (_, column, _, required)) in platforms.iter_mut().zip(PLATFORMS) {
            *slot = if required {
                Some(header.column(column)?)
            } else {
                header.optional(column)
            };
        }
        self.columns = (
            header.column(REFRESH_DATE)?,
            header.column(PRODUCT_TYPE)?,
            platforms,
        );
        Ok(())
    }

    fn csv_row(&mut self, row: &Row<'_>) -> Result<(), ParseError> {
        let (date_col, product_col, platform_cols) = self.columns;
        let date = super::parse_date(row.get(date_col), REFRESH_DATE, row.number)?;
        let product_type = row.get(product_col).to_uppercase();
        if product_type.is_empty() {
            return Err(row.invalid(format!("{PRODUCT_TYPE} is empty")));
        }
        let mut devices = [None; 5];
        for ((slot, col), (_, column, _, _)) in devices.iter_mut().zip(platform_cols).zip(PLATFORMS)
        {
            if let Some(col) = col {
                *slot = Some(row.count(col, column)?);
            }
        }
        self.push(
            ProductDevices {
                product_type,
                devices,
            },
            date,
            row.number,
        )
    }

    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        // One page in practice; should Graph page it, the pages are read in turn.
        let page = json::page::<JsonRow>(page)?;
        for row in page.value {
            let number = self.products.len() as u64 + 1;
            let date = json::date(&row.report_refresh_date, "reportRefreshDate", number)?;
            let values = [
                &row.windows,
                &row.mac,
                &row.android,
                &row.ios,
                &row.windows_10_mobile,
            ];
            let mut devices = [None; 5];
            for ((slot, value), (_, _, field, required)) in
                devices.iter_mut().zip(values).zip(PLATFORMS)
            {
                *slot = if required {
                    Some(json::required(value, field, number)?)
                } else {
                    json::count(value, field, number)?
                };
            }
            let product_type = json::product_type(row.product_type, number)?;
            self.push(
                ProductDevices {
                    product_type,
                    devices,
                },
                date,
                number,
            )?;
        }
        Ok(page.next_link)
    }

    fn rows(&self) -> u64 {
        self.products.len() as u64
    }

    fn refresh_date(&self) -> Option<NaiveDate> {
        self.refresh_date
    }

    fn encode(&self, tenant: &str) -> Vec<String> {
        let mut out = String::new();
        for product in &self.products {
            let mut product_label = String::new();
            super::escape_label(&product.product_type, &mut product_label);
            for (count, (platform, ..)) in product.devices.iter().zip(PLATFORMS) {
                if let Some(count) = count {
                    let _ = writeln!(
                        out,
                        "{DEVICES}{{tenant=\"{tenant}\",product_type=\"{product_label}\",platform=\"{platform}\"}} {count}"
                    );
                }
            }
        }
        vec![out]
    }
}

/// Parses the CSV body of the report.
pub fn parse_csv(body: &[u8]) -> Result<Platforms, ParseError> {
    Stream::<Platforms>::parse_csv(body)
}

/// Parses the beta JSON form of the report (one page).
pub fn parse_json(body: &[u8]) -> Result<Platforms, ParseError> {
    Stream::<Platforms>::parse_json_pages([body])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &[u8] = b"\xEF\xBB\xBFReport Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile\r\n\
2026-11-25,MICROSOFT 365 APPS FOR ENTERPRISE,1215,160,131,178,20\r\n\
2026-11-25,PROJECT ONLINE DESKTOP CLIENT,80,3,0,0,0\r\n";

    #[test]
    fn parses_graph_csv_and_encodes_one_series_per_platform() {
        let report = parse_csv(CSV).unwrap();
        assert_eq!(report.refresh_date, NaiveDate::from_ymd_opt(2026, 11, 25));
        assert_eq!(
            report.products[0],
            ProductDevices {
                product_type: "MICROSOFT 365 APPS FOR ENTERPRISE".into(),
                devices: [Some(1215), Some(160), Some(131), Some(178), Some(20)],
            }
        );
        let lines = report.encode("contoso").concat();
        assert_eq!(lines.lines().count(), 10);
        assert!(lines.contains(
            "office365_activations_activated_devices{tenant=\"contoso\",product_type=\"MICROSOFT 365 APPS FOR ENTERPRISE\",platform=\"windows_10_mobile\"} 20\n"
        ));
        assert!(
            lines.contains("product_type=\"PROJECT ONLINE DESKTOP CLIENT\",platform=\"mac\"} 3\n")
        );
    }

    #[test]
    fn columns_are_read_by_name_and_windows_10_mobile_is_optional() {
        let body = b"iOS,Mac,Product Type,Android,Windows,Report Refresh Date,New\n4,2,visio online plan 2,3,1,2026-11-24,x\n";
        let report = parse_csv(body).unwrap();
        assert_eq!(
            report.products,
            [ProductDevices {
                product_type: "VISIO ONLINE PLAN 2".into(),
                devices: [Some(1), Some(2), Some(3), Some(4), None],
            }]
        );
        assert!(!report.encode("t").concat().contains("windows_10_mobile"));
    }

    #[test]
    fn json_parses_into_the_same_report_as_the_csv() {
        let json = br#"{"@odata.context":"x","value":[{"reportRefreshDate":"2026-11-25","productType":"Microsoft 365 Apps for enterprise","windows":1215,"mac":160,"android":131,"ios":178,"windows10Mobile":20},{"reportRefreshDate":"2026-11-25","productType":"Project Online Desktop Client","windows":"80","mac":3,"android":0,"ios":0,"windows10Mobile":0}]}"#;
        let (a, b) = (parse_json(json).unwrap(), parse_csv(CSV).unwrap());
        assert_eq!((a.refresh_date, a.products), (b.refresh_date, b.products));
    }

    #[test]
    fn pages_are_read_in_turn() {
        let first = br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"A","windows":1,"mac":2,"android":3,"ios":4}],"@odata.nextLink":"https://graph.example/next"}"#;
        let second = br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"B","windows":5,"mac":6,"android":7,"ios":8}]}"#;
        let mut stream = Stream::<Platforms>::default();
        assert_eq!(
            stream.feed_json(first).unwrap().as_deref(),
            Some("https://graph.example/next")
        );
        assert_eq!(stream.feed_json(second).unwrap(), None);
        let report = stream.end().unwrap();
        assert_eq!(report.products.len(), 2);
        let dup = br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"a","windows":1,"mac":2,"android":3,"ios":4}]}"#;
        assert_eq!(
            Stream::<Platforms>::parse_json_pages([&first[..], &dup[..]])
                .unwrap_err()
                .reason(),
            "invalid_value",
            "a product on two pages is a duplicate"
        );
    }

    #[test]
    fn bad_reports_are_rejected_with_bounded_reasons() {
        for (body, reason) in [
            (&b"Report Refresh Date,Product Type,Windows,Android,iOS\n2026-11-25,X,1,1,1\n"[..], "missing_column"),
            (b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS\n2026-11-25,X,1,-1,1,1\n", "invalid_value"),
            (b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS\n2026-11-25,X,1,1.5,1,1\n", "invalid_value"),
            (b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS\n2026-11-25,X,1,1,1,1\n2026-11-25,x,1,1,1,1\n", "invalid_value"),
            (b"Report Refresh Date,Product Type,Windows,Mac,Android,iOS\n2026-11-25,X,1,1,1\n", "invalid_value"),
            (b"<html><body>Sign in</body></html>", "not_csv"),
            (b"", "not_csv"),
        ] {
            let err = parse_csv(body).unwrap_err();
            assert_eq!(err.reason(), reason, "{}: {err}", String::from_utf8_lossy(body));
        }
        for (body, reason) in [
            (&br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"A","windows":1,"android":1,"ios":1}]}"#[..], "invalid_value"),
            (br#"{"value":[{"reportRefreshDate":"2026-11-25","productType":"A","windows":1,"mac":1,"android"#, "invalid_response"),
        ] {
            let err = parse_json(body).unwrap_err();
            assert_eq!(err.reason(), reason, "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
