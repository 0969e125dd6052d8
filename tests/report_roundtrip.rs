//! Property tests of the report parsers: for each report kind, a random valid report rendered the
//! way Graph renders it, as CSV (byte order mark or not, CRLF or LF, columns in any order and an
//! unknown one, quoting, blank lines, any chunking) and as beta JSON (mixed-case product types,
//! numbers as numbers or strings, pages with `@odata.nextLink`), parses into the same gauges,
//! and those are the gauges the generator meant.
//!
//! Each case carries a `seed` for the rendering choices: proptest prints the whole failing case
//! (and keeps it in `tests/proptest-regressions/`), so a failure replays exactly.

use chrono::{Duration as Days, NaiveDate};
use office365_activations_exporter::reports::activation_counts::{self, Platforms, ProductDevices};
use office365_activations_exporter::reports::user_counts::{self, ActivationReport, ProductCounts};
use office365_activations_exporter::reports::user_detail::{self, Detail, ProductUsers};
use office365_activations_exporter::reports::{escape_label, Aggregate, Encoded, Kind};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Rendering choices, drawn from the case's seed.
struct Render(fastrand::Rng);

impl Render {
    fn new(seed: u64) -> Self {
        Render(fastrand::Rng::with_seed(seed))
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.0.u8(0..100) < percent
    }

    /// A CSV field, quoted when it must be and sometimes when it need not.
    fn field(&mut self, value: &str) -> String {
        let must = value.contains([',', '"', '\r', '\n']) || value != value.trim();
        if must || self.chance(20) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    }

    /// A CSV body: `columns` are (name, cell per row); their order is shuffled and an unknown
    /// column is sometimes added.
    fn csv(&mut self, mut columns: Vec<(String, Vec<String>)>, rows: usize) -> Vec<u8> {
        if self.chance(30) {
            columns.push(("Future Column".into(), vec!["x, y".into(); rows]));
        }
        self.0.shuffle(&mut columns);
        let eol = if self.chance(50) { "\r\n" } else { "\n" };
        let mut out = String::new();
        if self.chance(80) {
            out.push('\u{FEFF}');
        }
        let header: Vec<String> = columns.iter().map(|(name, _)| self.field(name)).collect();
        out.push_str(&header.join(","));
        for row in 0..rows {
            out.push_str(eol);
            if self.chance(5) {
                out.push_str(eol);
            }
            let cells: Vec<String> = columns
                .iter()
                .map(|(_, cells)| cells[row].clone())
                .collect();
            let cells: Vec<String> = cells.iter().map(|c| self.field(c)).collect();
            out.push_str(&cells.join(","));
        }
        if self.chance(70) {
            out.push_str(eol);
        }
        out.into_bytes()
    }

    /// A count as JSON: a number or a numeric string.
    fn number(&mut self, n: u64) -> Value {
        if self.chance(25) {
            Value::String(n.to_string())
        } else {
            json!(n)
        }
    }

    /// Graph's JSON spells product types in mixed case.
    fn mixed_case(&mut self, upper: &str) -> String {
        upper
            .chars()
            .map(|c| {
                if self.chance(50) {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    }

    /// A JSON page, sometimes with a byte order mark.
    fn page(&mut self, value: Vec<Value>, next: Option<String>) -> Vec<u8> {
        let mut page = Map::new();
        page.insert(
            "@odata.context".into(),
            json!("https://graph.microsoft.com/beta/$metadata#Collection(x)"),
        );
        page.insert("value".into(), Value::Array(value));
        if let Some(next) = next {
            page.insert("@odata.nextLink".into(), json!(next));
        }
        let mut out = Vec::new();
        if self.chance(10) {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend(serde_json::to_vec(&Value::Object(page)).unwrap());
        out
    }

    /// Splits `items` into pages of random sizes (at least one page, possibly empty).
    fn pages<T: Clone>(&mut self, items: &[T]) -> Vec<Vec<T>> {
        let mut pages = Vec::new();
        let mut rest = items;
        loop {
            let size = self.0.usize(0..=rest.len().min(4));
            let size = if pages.is_empty() || size > 0 {
                size
            } else {
                1
            };
            let (page, tail) = rest.split_at(size.min(rest.len()));
            pages.push(page.to_vec());
            rest = tail;
            if rest.is_empty() {
                return pages;
            }
        }
    }
}

/// Feeds a CSV body in random chunks (down to single bytes: split BOMs, CRLFs, UTF-8 sequences).
fn parse_csv(kind: &Kind, body: &[u8], tenant: &str, render: &mut Render) -> Encoded {
    let mut parser = (kind.parser)();
    let mut rest = body;
    while !rest.is_empty() {
        let size = render.0.usize(1..=rest.len().min(64));
        let (chunk, tail) = rest.split_at(size);
        parser.csv(chunk).unwrap();
        rest = tail;
    }
    parser.finish(tenant).unwrap()
}

/// Feeds JSON pages, checking each page's nextLink is handed back.
fn parse_json(kind: &Kind, pages: &[(Vec<u8>, Option<String>)], tenant: &str) -> Encoded {
    let mut parser = (kind.parser)();
    for (page, next) in pages {
        assert_eq!(&parser.json_page(page).unwrap(), next);
    }
    parser.finish(tenant).unwrap()
}

fn escaped(tenant: &str) -> String {
    let mut out = String::new();
    escape_label(tenant, &mut out);
    out
}

fn next_link(i: usize) -> String {
    format!("https://graph.microsoft.com/beta/reports/x?$format=application/json&$skiptoken={i}")
}

/// A product type as the CSV has it: upper case, with the characters that need quoting or
/// escaping; never blank at either end (the parser trims).
fn product_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("MICROSOFT 365 APPS FOR ENTERPRISE".to_owned()),
        Just("MICROSOFT 365 APPS FOR BUSINESS".to_owned()),
        Just("PROJECT ONLINE DESKTOP CLIENT".to_owned()),
        Just("VISIO ONLINE PLAN 2".to_owned()),
        "[A-Z0-9][A-Z0-9 ,\"\\\\()+-]{0,20}[A-Z0-9)]",
    ]
}

/// Distinct product types, in report order.
fn product_types(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(product_type(), 0..max).prop_map(|mut names| {
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    })
}

fn day() -> impl Strategy<Value = NaiveDate> {
    (0i64..4000).prop_map(|d| NaiveDate::from_ymd_opt(2017, 1, 1).unwrap() + Days::days(d))
}

/// A count: mostly small, sometimes anywhere in u64.
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..5000, 1 => any::<u64>()]
}

fn tenant() -> impl Strategy<Value = String> {
    "[a-z0-9 .\"\\\\\n-]{1,12}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn user_counts_csv_and_json_give_the_intended_gauges(
        date in day(),
        names in product_types(6),
        counts in prop::collection::vec((count(), count(), prop::option::of(count())), 6),
        shared_column in any::<bool>(),
        tenant in tenant(),
        seed in any::<u64>(),
    ) {
        let mut render = Render::new(seed);
        let products: Vec<ProductCounts> = names
            .iter()
            .zip(&counts)
            .map(|(name, (assigned, activated, shared))| ProductCounts {
                product_type: name.clone(),
                assigned: *assigned,
                activated: *activated,
                shared_computer_activation: shared.filter(|_| shared_column),
            })
            .collect();
        let report = ActivationReport {
            refresh_date: (!products.is_empty()).then_some(date),
            products,
        };
        let intended = Encoded {
            refresh_date: report.refresh_date,
            rows: report.products.len() as u64,
            families: user_counts::encode(&tenant, &report),
        };

        let rows = report.products.len();
        let cells = |f: &dyn Fn(&ProductCounts) -> String| report.products.iter().map(f).collect::<Vec<_>>();
        let mut columns = vec![
            ("Report Refresh Date".to_owned(), vec![date.to_string(); rows]),
            ("Product Type".to_owned(), cells(&|p| p.product_type.clone())),
            ("Assigned".to_owned(), cells(&|p| p.assigned.to_string())),
            ("Activated".to_owned(), cells(&|p| p.activated.to_string())),
        ];
        if shared_column {
            columns.push((
                "Shared Computer Activation".to_owned(),
                cells(&|p| p.shared_computer_activation.map_or_else(String::new, |n| n.to_string())),
            ));
        }
        let csv = render.csv(columns, rows);
        let from_csv = parse_csv(&user_counts::KIND, &csv, &tenant, &mut render);

        let value: Vec<Value> = report.products.iter().map(|p| {
            let mut row = Map::new();
            row.insert("reportRefreshDate".into(), json!(date.to_string()));
            row.insert("productType".into(), json!(render.mixed_case(&p.product_type)));
            row.insert("assigned".into(), render.number(p.assigned));
            row.insert("activated".into(), render.number(p.activated));
            match p.shared_computer_activation {
                Some(n) => { row.insert("sharedComputerActivation".into(), render.number(n)); }
                None if render.chance(50) => { row.insert("sharedComputerActivation".into(), Value::Null); }
                None => {}
            }
            Value::Object(row)
        }).collect();
        let page = render.page(value, None);
        let from_json = parse_json(&user_counts::KIND, &[(page, None)], &tenant);

        prop_assert_eq!(&from_csv, &intended, "CSV: {}", String::from_utf8_lossy(&csv));
        prop_assert_eq!(&from_json, &intended);
    }

    #[test]
    fn activation_counts_csv_and_json_give_the_intended_gauges(
        date in day(),
        names in product_types(6),
        devices in prop::collection::vec(prop::array::uniform5(count()), 6),
        mobile_column in any::<bool>(),
        tenant in tenant(),
        seed in any::<u64>(),
    ) {
        let mut render = Render::new(seed);
        let mut expected = Platforms::default();
        expected.products = names.iter().zip(&devices).map(|(name, d)| ProductDevices {
            product_type: name.clone(),
            devices: [Some(d[0]), Some(d[1]), Some(d[2]), Some(d[3]), Some(d[4]).filter(|_| mobile_column)],
        }).collect();
        expected.refresh_date = (!expected.products.is_empty()).then_some(date);
        let intended = Encoded {
            refresh_date: expected.refresh_date,
            rows: expected.products.len() as u64,
            families: expected.encode(&escaped(&tenant)),
        };

        let rows = expected.products.len();
        let mut columns = vec![
            ("Report Refresh Date".to_owned(), vec![date.to_string(); rows]),
            ("Product Type".to_owned(), expected.products.iter().map(|p| p.product_type.clone()).collect()),
        ];
        for (i, (_, column, _, required)) in activation_counts::PLATFORMS.iter().enumerate() {
            if *required || mobile_column {
                columns.push(((*column).to_owned(), expected.products.iter().map(|p| p.devices[i].unwrap().to_string()).collect()));
            }
        }
        let csv = render.csv(columns, rows);
        let from_csv = parse_csv(&activation_counts::KIND, &csv, &tenant, &mut render);

        let value: Vec<Value> = expected.products.iter().map(|p| {
            let mut row = Map::new();
            row.insert("reportRefreshDate".into(), json!(date.to_string()));
            row.insert("productType".into(), json!(render.mixed_case(&p.product_type)));
            for (count, (_, _, field, _)) in p.devices.iter().zip(activation_counts::PLATFORMS) {
                match count {
                    Some(n) => { row.insert(field.into(), render.number(*n)); }
                    None if render.chance(50) => { row.insert(field.into(), Value::Null); }
                    None => {}
                }
            }
            Value::Object(row)
        }).collect();
        let chunks = render.pages(&value);
        let last = chunks.len() - 1;
        let pages: Vec<(Vec<u8>, Option<String>)> = chunks.into_iter().enumerate().map(|(i, rows)| {
            let next = (i < last).then(|| next_link(i));
            (render.page(rows, next.clone()), next)
        }).collect();
        let from_json = parse_json(&activation_counts::KIND, &pages, &tenant);

        prop_assert_eq!(&from_csv, &intended, "CSV: {}", String::from_utf8_lossy(&csv));
        prop_assert_eq!(&from_json, &intended);
    }

    #[test]
    fn user_detail_csv_and_json_give_the_intended_gauges(
        date in day(),
        names in product_types(4).prop_filter("a product", |n| !n.is_empty()),
        users in prop::collection::vec(
            (
                "[a-zA-Z0-9 .,@\"]{1,16}",
                prop::collection::vec(
                    (any::<prop::sample::Index>(), prop::option::of(-3i64..400), prop_oneof![4 => 0u64..7, 1 => any::<u64>()], prop_oneof![4 => 0u64..7, 1 => any::<u64>()], count(), any::<bool>()),
                    0..4,
                ),
            ),
            0..12,
        ),
        tenant in tenant(),
        seed in any::<u64>(),
    ) {
        let mut render = Render::new(seed);
        // Each user's activations: (product, last activated, windows, mac, other platforms, shared).
        type Activation = (String, Option<NaiveDate>, u64, u64, u64, bool);
        let users: Vec<(String, Vec<Activation>)> = users.into_iter().map(|(name, acts)| {
            let mut seen = std::collections::HashSet::new();
            let acts = acts.into_iter()
                .map(|(product, before, windows, mac, other, shared)| (names[product.index(names.len())].clone(), before.map(|d| date - Days::days(d)), windows, mac, other, shared))
                .filter(|a| seen.insert(a.0.clone()))
                .collect();
            (name, acts)
        }).collect();

        let mut expected = Detail::default();
        for (_, acts) in &users {
            for (product, last, windows, mac, _, shared) in acts {
                expected.rows += 1;
                expected.refresh_date = Some(date);
                let index = match expected.products.iter().position(|p| &p.product_type == product) {
                    Some(i) => i,
                    None => {
                        expected.products.push(ProductUsers { product_type: product.clone(), ..ProductUsers::default() });
                        expected.products.len() - 1
                    }
                };
                let p = &mut expected.products[index];
                p.users += 1;
                p.by_computers[windows.saturating_add(*mac).min(user_detail::COMPUTER_LIMIT) as usize] += 1;
                p.shared += u64::from(*shared);
                match last {
                    None => p.never += 1,
                    Some(last) => {
                        for (count, days) in p.inactive.iter_mut().zip(user_detail::INACTIVE_DAYS) {
                            *count += u64::from((date - *last).num_days() > days);
                        }
                    }
                }
            }
        }
        let intended = Encoded {
            refresh_date: expected.refresh_date,
            rows: expected.rows,
            families: expected.encode(&escaped(&tenant)),
        };

        let flat: Vec<(&String, &Activation)> = users.iter().flat_map(|(name, acts)| acts.iter().map(move |a| (name, a))).collect();
        let yes_no = |render: &mut Render, b: bool| {
            let words = if b { ["Yes", "True", "1", "YES"] } else { ["No", "False", "0", ""] };
            words[render.0.usize(0..words.len())].to_owned()
        };
        let column = |f: &dyn Fn(&(&String, &Activation)) -> String| flat.iter().map(f).collect::<Vec<_>>();
        let shared_cells: Vec<String> = flat.iter().map(|(_, a)| yes_no(&mut render, a.5)).collect();
        let columns = vec![
            ("Report Refresh Date".to_owned(), vec![date.to_string(); flat.len()]),
            ("User Principal Name".to_owned(), column(&|(name, _)| format!("{name}@contoso.com"))),
            ("Display Name".to_owned(), column(&|(name, _)| (*name).clone())),
            ("Product Type".to_owned(), column(&|(_, a)| a.0.clone())),
            ("Last Activated Date".to_owned(), column(&|(_, a)| a.1.map_or_else(String::new, |d| d.to_string()))),
            ("Windows".to_owned(), column(&|(_, a)| a.2.to_string())),
            ("Mac".to_owned(), column(&|(_, a)| a.3.to_string())),
            ("Windows 10 Mobile".to_owned(), column(&|(_, a)| a.4.to_string())),
            ("iOS".to_owned(), column(&|(_, a)| a.4.to_string())),
            ("Android".to_owned(), column(&|(_, a)| a.4.to_string())),
            ("Activated On Shared Computer".to_owned(), shared_cells),
        ];
        let csv = render.csv(columns, flat.len());
        let from_csv = parse_csv(&user_detail::KIND, &csv, &tenant, &mut render);

        let value: Vec<Value> = users.iter().map(|(name, acts)| {
            let counts: Vec<Value> = acts.iter().map(|(product, last, windows, mac, other, shared)| {
                let shared = if render.chance(50) { json!(shared) } else { json!(yes_no(&mut render, *shared)) };
                let last = match last {
                    Some(d) => json!(d.to_string()),
                    None if render.chance(50) => json!(""),
                    None => Value::Null,
                };
                json!({
                    "productType": render.mixed_case(product),
                    "lastActivatedDate": last,
                    "windows": render.number(*windows),
                    "mac": render.number(*mac),
                    "windows10Mobile": other,
                    "ios": other,
                    "android": other,
                    "activatedOnSharedComputer": shared,
                })
            }).collect();
            json!({
                "reportRefreshDate": date.to_string(),
                "userPrincipalName": format!("{name}@contoso.com"),
                "displayName": name,
                "userActivationCounts": counts,
            })
        }).collect();
        let chunks = render.pages(&value);
        let last = chunks.len() - 1;
        let pages: Vec<(Vec<u8>, Option<String>)> = chunks.into_iter().enumerate().map(|(i, rows)| {
            let next = (i < last).then(|| next_link(i));
            (render.page(rows, next.clone()), next)
        }).collect();
        let from_json = parse_json(&user_detail::KIND, &pages, &tenant);

        prop_assert_eq!(&from_csv, &intended, "CSV: {}", String::from_utf8_lossy(&csv));
        prop_assert_eq!(&from_json, &intended);
    }
}
