//! The user detail report (`getOffice365ActivationsUserDetail`): one row per user and product.
//! Answers "which users are at the install limit, or have not activated for months, so the
//! licence can be reclaimed?", as counts only.
//!
//! Personal data: the parser never reads the User Principal Name or Display Name columns (nor the
//! JSON fields), so no name can reach a label, a log line, the landing page or the disk; only
//! per-product counts leave it. Microsoft's concealed-names setting therefore changes nothing
//! here. The report is streamed: each CSV record is folded into the counts as it arrives, so a
//! 300,000-user report costs the memory of one record. The beta JSON is paged (about 200 users a
//! page, `@odata.nextLink`); each page is folded in the same way.
//!
//! CSV: `Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,
//! Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer`.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::csv::{Header, Row};
use super::{json, Aggregate, Family, Kind, ParseError, Stream};

/// `office365_activations_detail_users{tenant,product_type}`.
pub const USERS: &str = "office365_activations_detail_users";
/// `office365_activations_users_by_activated_computers{tenant,product_type,computers}`.
pub const BY_COMPUTERS: &str = "office365_activations_users_by_activated_computers";
/// `office365_activations_users_at_install_limit{tenant,product_type}`.
pub const AT_LIMIT: &str = "office365_activations_users_at_install_limit";
/// `office365_activations_users_shared_computer_activated{tenant,product_type}`.
pub const SHARED: &str = "office365_activations_users_shared_computer_activated";
/// `office365_activations_users_inactive{tenant,product_type,days}`.
pub const INACTIVE: &str = "office365_activations_users_inactive";
/// `office365_activations_users_never_activated{tenant,product_type}`.
pub const NEVER: &str = "office365_activations_users_never_activated";

/// Microsoft 365 Apps lets a user activate on this many PCs or Macs at once.
pub const COMPUTER_LIMIT: u64 = 5;

/// The `computers` label values: 0 to 4, then the limit and beyond.
pub const COMPUTER_BUCKETS: [&str; 6] = ["0", "1", "2", "3", "4", "5+"];

/// The `days` thresholds of [`INACTIVE`].
pub const INACTIVE_DAYS: [i64; 3] = [30, 90, 180];

/// The kind.
pub static KIND: Kind = Kind {
    name: "user_detail",
    api: "getOffice365ActivationsUserDetail",
    default_enabled: false,
    large: true,
    rows: "user rows",
    families: &[
        Family {
            name: USERS,
            help: "Users Graph's Office activations user detail report lists for the product (one per user with the licence).",
        },
        Family {
            name: BY_COMPUTERS,
            help: "Users by the number of PCs and Macs (Windows plus Mac) they activated the product on; computers is 0 to 4 or 5+ (Microsoft 365 Apps allows 5 PCs or Macs per user).",
        },
        Family {
            name: AT_LIMIT,
            help: "Users who activated the product on 5 or more PCs and Macs: at the install limit, a further activation needs one deactivated.",
        },
        Family {
            name: SHARED,
            help: "Users who activated the product on a shared computer (Activated On Shared Computer).",
        },
        Family {
            name: INACTIVE,
            help: "Users whose Last Activated Date is more than `days` days before the Report Refresh Date: candidates for licence reclamation.",
        },
        Family {
            name: NEVER,
            help: "Users with the licence who never activated the product (no Last Activated Date).",
        },
    ],
    parser: || Box::new(Stream::<Detail>::default()),
};

/// The counts of one product type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductUsers {
    /// The Product Type, upper case.
    pub product_type: String,
    /// Users listed.
    pub users: u64,
    /// Users per entry of [`COMPUTER_BUCKETS`].
    pub by_computers: [u64; 6],
    /// Users activated on a shared computer.
    pub shared: u64,
    /// Users inactive for more than each entry of [`INACTIVE_DAYS`].
    pub inactive: [u64; 3],
    /// Users who never activated.
    pub never: u64,
}

/// One user's activation of one product, as read (no name).
struct Activation {
    refresh_date: NaiveDate,
    last_activated: Option<NaiveDate>,
    computers: u64,
    shared: bool,
}

/// The report as it is read: counts per product, never a name.
#[derive(Debug, Default)]
pub struct Detail {
    /// CSV positions: date, product, last activated, windows, mac, shared.
    columns: [usize; 6],
    /// The report's date.
    pub refresh_date: Option<NaiveDate>,
    /// Rows read (user and product pairs).
    pub rows: u64,
    /// One entry per product type, in order of first appearance.
    pub products: Vec<ProductUsers>,
}

const REFRESH_DATE: &str = "Report Refresh Date";
const PRODUCT_TYPE: &str = "Product Type";
const LAST_ACTIVATED: &str = "Last Activated Date";
const WINDOWS: &str = "Windows";
const MAC: &str = "Mac";
const SHARED_COLUMN: &str = "Activated On Shared Computer";

/// A yes/no cell: `Yes`/`True`/`1` or `No`/`False`/`0`/empty, any case.
fn flag(raw: &str, what: &str, row: u64) -> Result<bool, ParseError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" | "" => Ok(false),
        _ => Err(ParseError::InvalidValue {
            row,
            detail: format!("{what} must be Yes or No"),
        }),
    }
}

/// The same error without the offending value: in a report of personal data, a misplaced column
/// could put a user name where a count belongs, and the error goes to the log and landing page.
fn redact(error: ParseError) -> ParseError {
    match error {
        ParseError::InvalidValue { row, detail } => {
            let what = detail.split(", got ").next().unwrap_or_default();
            ParseError::InvalidValue {
                row,
                detail: format!("{what} (the value is not shown: the report holds personal data)"),
            }
        }
        ParseError::NotJson(_) => {
            ParseError::NotJson("the page is not the user detail JSON (details not shown: the report holds personal data)".into())
        }
        other => other,
    }
}

impl Detail {
    /// Folds one activation into its product's counts.
    fn add(&mut self, product_type: String, a: Activation) {
        self.rows += 1;
        self.refresh_date = self.refresh_date.max(Some(a.refresh_date));
        let index = match self
            .products
            .iter()
            .position(|p| p.product_type == product_type)
        {
            Some(i) => i,
            None => {
                self.products.push(ProductUsers {
                    product_type,
                    ..ProductUsers::default()
                });
                self.products.len() - 1
            }
        };
        let p = &mut self.products[index];
        p.users += 1;
        p.by_computers[a.computers.min(COMPUTER_LIMIT) as usize] += 1;
        p.shared += u64::from(a.shared);
        match a.last_activated {
            None => p.never += 1,
            Some(last) => {
                let days = (a.refresh_date - last).num_days();
                for (count, threshold) in p.inactive.iter_mut().zip(INACTIVE_DAYS) {
                    *count += u64::from(days > threshold);
                }
            }
        }
    }
}

/// One user of the JSON report; the name fields are not even deserialized.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonUser {
    report_refresh_date: Option<String>,
    #[serde(default)]
    user_activation_counts: Vec<JsonActivation>,
}

/// One product of a JSON user.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonActivation {
    product_type: Option<String>,
    last_activated_date: Option<String>,
    windows: Option<serde_json::Value>,
    mac: Option<serde_json::Value>,
    activated_on_shared_computer: Option<serde_json::Value>,
}

impl Aggregate for Detail {
    fn columns(&mut self, header: &Header) -> Result<(), ParseError> {
        self.columns = [
            header.column(REFRESH_DATE)?,
            header.column(PRODUCT_TYPE)?,
            header.column(LAST_ACTIVATED)?,
            header.column(WINDOWS)?,
            header.column(MAC)?,
            header.column(SHARED_COLUMN)?,
        ];
        Ok(())
    }

    fn csv_row(&mut self, row: &Row<'_>) -> Result<(), ParseError> {
        self.read_csv_row(row).map_err(redact)
    }

    fn json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        self.read_json_page(page).map_err(redact)
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn refresh_date(&self) -> Option<NaiveDate> {
        self.refresh_date
    }

    fn encode(&self, tenant: &str) -> Vec<String> {
        self.encode_families(tenant)
    }
}

impl Detail {
    fn read_csv_row(&mut self, row: &Row<'_>) -> Result<(), ParseError> {
        let [date, product, last, windows, mac, shared] = self.columns;
        let refresh_date = super::parse_date(row.get(date), REFRESH_DATE, row.number)?;
        let product_type = row.get(product).to_uppercase();
        if product_type.is_empty() {
            return Err(row.invalid(format!("{PRODUCT_TYPE} is empty")));
        }
        let last_activated = match row.get(last) {
            "" => None,
            raw => Some(super::parse_date(raw, LAST_ACTIVATED, row.number)?),
        };
        let computers = row
            .count(windows, WINDOWS)?
            .saturating_add(row.count(mac, MAC)?);
        let activation = Activation {
            refresh_date,
            last_activated,
            computers,
            shared: flag(row.get(shared), SHARED_COLUMN, row.number)?,
        };
        self.add(product_type, activation);
        Ok(())
    }

    fn read_json_page(&mut self, page: &[u8]) -> Result<Option<String>, ParseError> {
        let page = json::page::<JsonUser>(page)?;
        for user in page.value {
            let number = self.rows + 1;
            let refresh_date = json::date(&user.report_refresh_date, "reportRefreshDate", number)?;
            for a in user.user_activation_counts {
                let number = self.rows + 1;
                let last_activated = match a.last_activated_date.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(raw) => Some(super::parse_date(raw, "lastActivatedDate", number)?),
                };
                let computers = json::required(&a.windows, "windows", number)?
                    .saturating_add(json::required(&a.mac, "mac", number)?);
                let shared = match &a.activated_on_shared_computer {
                    None | Some(serde_json::Value::Null) => false,
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(serde_json::Value::String(s)) => {
                        flag(s, "activatedOnSharedComputer", number)?
                    }
                    Some(other) => {
                        return Err(ParseError::InvalidValue {
                            row: number,
                            detail: format!(
                                "activatedOnSharedComputer must be true or false, got {other}"
                            ),
                        })
                    }
                };
                let product_type = json::product_type(a.product_type, number)?;
                let activation = Activation {
                    refresh_date,
                    last_activated,
                    computers,
                    shared,
                };
                self.add(product_type, activation);
            }
        }
        Ok(page.next_link)
    }

    fn encode_families(&self, tenant: &str) -> Vec<String> {
        let mut families = vec![String::new(); KIND.families.len()];
        for p in &self.products {
            let mut labels = format!("tenant=\"{tenant}\",product_type=\"");
            super::escape_label(&p.product_type, &mut labels);
            labels.push('"');
            let _ = writeln!(families[0], "{USERS}{{{labels}}} {}", p.users);
            for (count, bucket) in p.by_computers.iter().zip(COMPUTER_BUCKETS) {
                let _ = writeln!(
                    families[1],
                    "{BY_COMPUTERS}{{{labels},computers=\"{bucket}\"}} {count}"
                );
            }
            let _ = writeln!(families[2], "{AT_LIMIT}{{{labels}}} {}", p.by_computers[5]);
            let _ = writeln!(families[3], "{SHARED}{{{labels}}} {}", p.shared);
            for (count, days) in p.inactive.iter().zip(INACTIVE_DAYS) {
                let _ = writeln!(
                    families[4],
                    "{INACTIVE}{{{labels},days=\"{days}\"}} {count}"
                );
            }
            let _ = writeln!(families[5], "{NEVER}{{{labels}}} {}", p.never);
        }
        families
    }
}

/// Parses a whole CSV body of the report.
pub fn parse_csv(body: &[u8]) -> Result<Detail, ParseError> {
    Stream::<Detail>::parse_csv(body)
}

/// Parses JSON pages of the report, in order.
pub fn parse_json_pages<'a>(
    pages: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Detail, ParseError> {
    Stream::<Detail>::parse_json_pages(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "\u{FEFF}Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer\r\n";

    fn csv(rows: &[&str]) -> Vec<u8> {
        let mut body = HEADER.to_owned();
        for row in rows {
            body.push_str(row);
            body.push_str("\r\n");
        }
        body.into_bytes()
    }

    #[test]
    fn counts_users_by_computers_limit_sharing_and_inactivity() {
        let body = csv(&[
            "2026-11-25,alice@contoso.example,Alice,MICROSOFT 365 APPS FOR ENTERPRISE,2026-11-20,3,2,0,1,1,No",
            "2026-11-25,bob@contoso.example,Bob,MICROSOFT 365 APPS FOR ENTERPRISE,2026-08-01,1,0,0,0,0,Yes",
            "2026-11-25,carol@contoso.example,Carol,MICROSOFT 365 APPS FOR ENTERPRISE,2026-01-02,6,1,0,0,0,False",
            "2026-11-25,dave@contoso.example,Dave,MICROSOFT 365 APPS FOR ENTERPRISE,,0,0,0,0,0,No",
            "2026-11-25,alice@contoso.example,Alice,PROJECT ONLINE DESKTOP CLIENT,2026-10-26,1,0,0,0,0,No",
        ]);
        let detail = parse_csv(&body).unwrap();
        assert_eq!(detail.rows, 5);
        assert_eq!(
            detail.products[0],
            ProductUsers {
                product_type: "MICROSOFT 365 APPS FOR ENTERPRISE".into(),
                users: 4,
                by_computers: [1, 1, 0, 0, 0, 2],
                shared: 1,
                // 5 days, 116 days, 327 days; Dave never activated.
                inactive: [2, 2, 1],
                never: 1,
            }
        );
        // 30 days exactly is not "more than 30 days".
        assert_eq!(detail.products[1].inactive, [0, 0, 0]);
        let text = detail.encode("contoso").concat();
        assert!(text.contains("office365_activations_users_at_install_limit{tenant=\"contoso\",product_type=\"MICROSOFT 365 APPS FOR ENTERPRISE\"} 2\n"), "{text}");
        assert!(text.contains("office365_activations_users_by_activated_computers{tenant=\"contoso\",product_type=\"MICROSOFT 365 APPS FOR ENTERPRISE\",computers=\"5+\"} 2\n"));
        assert!(text.contains("office365_activations_users_inactive{tenant=\"contoso\",product_type=\"MICROSOFT 365 APPS FOR ENTERPRISE\",days=\"180\"} 1\n"));
        assert!(text.contains("office365_activations_users_never_activated{tenant=\"contoso\",product_type=\"PROJECT ONLINE DESKTOP CLIENT\"} 0\n"));
        for name in ["alice", "Alice", "bob", "contoso.example"] {
            assert!(!text.contains(name), "{name} leaked into {text}");
        }
    }

    #[test]
    fn json_pages_give_the_same_counts_as_the_csv() {
        let body = csv(&[
            "2026-11-25,a,A,MICROSOFT 365 APPS FOR ENTERPRISE,2026-11-20,3,2,0,1,1,No",
            "2026-11-25,b,B,MICROSOFT 365 APPS FOR ENTERPRISE,,0,0,0,0,0,Yes",
            "2026-11-25,b,B,VISIO ONLINE PLAN 2,2026-05-01,1,0,0,0,0,No",
        ]);
        let page1 = br#"{"value":[{"reportRefreshDate":"2026-11-25","userPrincipalName":"a","displayName":"A","userActivationCounts":[{"productType":"Microsoft 365 Apps for enterprise","lastActivatedDate":"2026-11-20","windows":3,"mac":2,"windows10Mobile":0,"ios":1,"android":1,"activatedOnSharedComputer":false}]}],"@odata.nextLink":"https://graph.example/beta/reports/getOffice365ActivationsUserDetail?$skiptoken=x"}"#;
        let page2 = br#"{"value":[{"reportRefreshDate":"2026-11-25","userPrincipalName":"b","displayName":"B","userActivationCounts":[{"productType":"Microsoft 365 Apps for enterprise","lastActivatedDate":null,"windows":0,"mac":"0","activatedOnSharedComputer":true},{"productType":"Visio Online Plan 2","lastActivatedDate":"2026-05-01","windows":1,"mac":0,"activatedOnSharedComputer":false}]}]}"#;
        let from_csv = parse_csv(&body).unwrap();
        let from_json = parse_json_pages([&page1[..], &page2[..]]).unwrap();
        assert_eq!(from_json.products, from_csv.products);
        assert_eq!(
            (from_json.rows, from_json.refresh_date),
            (from_csv.rows, from_csv.refresh_date)
        );
        let mut stream = Stream::<Detail>::default();
        assert!(
            stream.feed_json(page1).unwrap().is_some(),
            "the first page links to the next"
        );
        assert_eq!(stream.feed_json(page2).unwrap(), None);
    }

    #[test]
    fn bad_rows_are_rejected_whole_with_bounded_reasons() {
        for (rows, reason) in [
            (
                &["2026-11-25,a,A,X,2026-11-20,x,0,0,0,0,No"][..],
                "invalid_value",
            ),
            (
                &["2026-11-25,a,A,X,2026-11-20,-1,0,0,0,0,No"],
                "invalid_value",
            ),
            (
                &["2026-11-25,a,A,X,yesterday,1,0,0,0,0,No"],
                "invalid_value",
            ),
            (
                &["2026-11-25,a,A,X,2026-11-20,1,0,0,0,0,Maybe"],
                "invalid_value",
            ),
            (
                &["2026-11-25,a,A,,2026-11-20,1,0,0,0,0,No"],
                "invalid_value",
            ),
            (&["2026-11-25,a,A,X,2026-11-20,1,0,0,0,0"], "invalid_value"),
        ] {
            let err = parse_csv(&csv(rows)).unwrap_err();
            assert_eq!(err.reason(), reason, "{rows:?}: {err}");
        }
        let no_mac = b"Report Refresh Date,Product Type,Last Activated Date,Windows,Activated On Shared Computer\n";
        assert_eq!(parse_csv(no_mac).unwrap_err().reason(), "missing_column");
        // A shifted row puts a user name where a count belongs: the error must not repeat it.
        for row in [
            "2026-11-25,X,2026-11-20,secret@contoso.example,0,0,0,0,No,a,b",
            "2026-11-25,a,b,X,2026-11-20,0,0,0,0,0,secret@contoso.example",
            "2026-11-25,a,b,X,secret@contoso.example,0,0,0,0,0,No",
        ] {
            let err = parse_csv(&csv(&[row])).unwrap_err();
            assert_eq!(err.reason(), "invalid_value");
            assert!(
                !err.to_string().contains("secret"),
                "an error names no user: {err}"
            );
        }
        let page = br#"{"value":[{"reportRefreshDate":"2026-11-25","userActivationCounts":[{"productType":"A","windows":"secret@contoso.example","mac":0}]}]}"#;
        let err = parse_json_pages([&page[..]]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let page = br#"{"value":[{"reportRefreshDate":"2026-11-25","userPrincipalName":"secret@contoso.example","userActivationCounts":[{"productType":"A","windows":[1],"mac":0}]}]}"#;
        let err = parse_json_pages([&page[..]]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        for page in [
            &br#"{"value":[{"reportRefreshDate":"2026-11-25","userActivationCounts":[{"productType":"A","windows":1}]}]}"#[..],
            br#"{"value":[{"reportRefreshDate":"2026-11-25","userActivationCounts":[{"productType":"A","windows":1,"mac":0,"activatedOnSharedComputer":7}]}]}"#,
        ] {
            assert_eq!(parse_json_pages([page]).unwrap_err().reason(), "invalid_value");
        }
        assert_eq!(
            parse_json_pages([&b"<html>"[..]]).unwrap_err().reason(),
            "invalid_response"
        );
    }

    #[test]
    fn a_header_only_report_is_empty() {
        let detail = parse_csv(&csv(&[])).unwrap();
        assert_eq!(
            (detail.rows, detail.refresh_date, detail.products.len()),
            (0, None, 0)
        );
        assert!(detail.encode("t").iter().all(String::is_empty));
    }
}
