//! What the beta JSON form of every report shares: the page envelope and the value rules.
//!
//! A page is `{"value":[...],"@odata.nextLink":"..."}`. Counts may arrive as numbers or numeric
//! strings; the same rules as the CSV apply (non-negative integers, valid days). Product types are
//! upper-cased, so the `product_type` label is the same whichever format is used (Graph spells
//! them in mixed case here and in upper case in the CSV).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::ParseError;

/// One page of a JSON report.
#[derive(Deserialize)]
pub struct Page<T> {
    /// The rows.
    pub value: Vec<T>,
    /// The next page's URL; absent on the last page.
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
}

/// Parses a page of rows of type `T`.
pub fn page<T: DeserializeOwned>(body: &[u8]) -> Result<Page<T>, ParseError> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        ParseError::NotJson(format!("{e} (body starts with {start:?})"))
    })
}

/// Refuses a next page where the report is a single page.
pub fn single(next_link: Option<String>) -> Result<(), ParseError> {
    match next_link {
        None => Ok(()),
        Some(_) => Err(ParseError::NotJson(
            "the report is paged (@odata.nextLink); one page was expected".into(),
        )),
    }
}

/// A count: `None` when absent or null, else a non-negative integer (number or numeric string).
pub fn count(value: &Option<Value>, name: &str, row: u64) -> Result<Option<u64>, ParseError> {
    let invalid = |shown: String| ParseError::InvalidValue {
        row,
        detail: format!("{name} must be a non-negative integer, got {shown}"),
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| invalid(n.to_string())),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{s:?}"))),
        Some(other) => Err(invalid(other.to_string())),
    }
}

/// A count that must be there.
pub fn required(value: &Option<Value>, name: &str, row: u64) -> Result<u64, ParseError> {
    count(value, name, row)?.ok_or_else(|| ParseError::InvalidValue {
        row,
        detail: format!("{name} is missing"),
    })
}

/// A day that must be there.
pub fn date(value: &Option<String>, name: &str, row: u64) -> Result<chrono::NaiveDate, ParseError> {
    super::parse_date(value.as_deref().unwrap_or(""), name, row)
}

/// The product type, upper-cased; empty is refused.
pub fn product_type(value: Option<String>, row: u64) -> Result<String, ParseError> {
    let product = value.unwrap_or_default().trim().to_uppercase();
    if product.is_empty() {
        return Err(ParseError::InvalidValue {
            row,
            detail: "productType is empty".into(),
        });
    }
    Ok(product)
}
