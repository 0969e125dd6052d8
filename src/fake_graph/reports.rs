//! The three report APIs of the Office activations report (graph-behaviour.md sections 2, 3 and
//! 5): which report a request is for ([`FakeReport`]), the data of the two views beyond the user
//! counts ([`FakePlatformCounts`], [`FakeUser`]), what a tenant serves when a test set no such
//! data ([`derived_activation_counts`], [`derived_users`]), and how the fake renders each report
//! as CSV (UTF-8 BOM, CRLF) and as beta JSON (the user detail paged with `@odata.nextLink`).
//!
//! Rendering happens after the state lock is released: the Graph and download handlers take a
//! [`DataSnapshot`] (cheap clones) under the lock and render from it, so a demo tenant's few
//! thousand users never hold up other requests.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::{Days, NaiveDate};
use serde::Serialize;
use tokio::time::Instant;

use super::demo::{demo_products, DemoUsers};
use super::util::{csv_field, json_product_name};
use super::{FakeProduct, ReportData};

/// One of the three report APIs of the Office activations report. Graph serves each on its own
/// path, counts and throttles each separately, and the fake keeps canned answers, body overrides
/// and statistics per report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeReport {
    /// `getOffice365ActivationsUserCounts`: assigned, activated and shared-computer users per
    /// product (the report the exporter always had).
    UserCounts,
    /// `getOffice365ActivationCounts`: activated devices per product and platform.
    ActivationCounts,
    /// `getOffice365ActivationsUserDetail`: one row per user and product; the JSON is paged.
    UserDetail,
}

impl FakeReport {
    /// Every report, in the order of the spec's table.
    pub const ALL: [FakeReport; 3] = [
        FakeReport::UserCounts,
        FakeReport::ActivationCounts,
        FakeReport::UserDetail,
    ];

    /// The Graph function name, as in `/v1.0/reports/<api_name>`.
    pub fn api_name(self) -> &'static str {
        match self {
            FakeReport::UserCounts => "getOffice365ActivationsUserCounts",
            FakeReport::ActivationCounts => "getOffice365ActivationCounts",
            FakeReport::UserDetail => "getOffice365ActivationsUserDetail",
        }
    }

    /// The spec's name of the report (the exporter's config name and `report` label value):
    /// `user_counts`, `activation_counts` or `user_detail`.
    pub fn config_name(self) -> &'static str {
        match self {
            FakeReport::UserCounts => "user_counts",
            FakeReport::ActivationCounts => "activation_counts",
            FakeReport::UserDetail => "user_detail",
        }
    }

    /// The CSV's header line as the real report has it today (without BOM or line ending).
    pub fn csv_header(self) -> &'static str {
        match self {
            FakeReport::UserCounts => {
                "Report Refresh Date,Product Type,Assigned,Activated,Shared Computer Activation"
            }
            FakeReport::ActivationCounts => {
                "Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile"
            }
            FakeReport::UserDetail => {
                "Report Refresh Date,User Principal Name,Display Name,Product Type,Last Activated Date,Windows,Mac,Windows 10 Mobile,iOS,Android,Activated On Shared Computer"
            }
        }
    }

    /// The file name the download host announces in `Content-Disposition`.
    pub fn file_name(self) -> &'static str {
        match self {
            FakeReport::UserCounts => "Office365ActivationsUserCounts.csv",
            FakeReport::ActivationCounts => "Office365ActivationCounts.csv",
            FakeReport::UserDetail => "Office365ActivationsUserDetail.csv",
        }
    }

    /// The OData type of the JSON (beta) rows, for `@odata.context`.
    fn odata_type(self) -> &'static str {
        match self {
            FakeReport::UserCounts => "microsoft.graph.office365ActivationsUserCounts",
            FakeReport::ActivationCounts => "microsoft.graph.office365ActivationCounts",
            FakeReport::UserDetail => "microsoft.graph.office365ActivationsUserDetail",
        }
    }

    /// The report whose function name is `segment`, compared case-insensitively (Graph does not
    /// care about the case of function names).
    pub(crate) fn from_api_name(segment: &str) -> Option<FakeReport> {
        FakeReport::ALL
            .into_iter()
            .find(|r| r.api_name().eq_ignore_ascii_case(segment))
    }
}

/// What the fake saw for one report of one tenant, in [`FakeStats::reports`].
///
/// [`FakeStats::reports`]: super::FakeStats::reports
#[derive(Clone, Debug, Default)]
pub struct FakeReportStats {
    /// Requests to this report's API with a token of the tenant (answered in any way; every page
    /// of a paged JSON report counts).
    pub report_requests: u64,
    /// Requests to the download host for a link to this report (answered in any way).
    pub download_requests: u64,
    /// Report requests answered 429 by the built-in throttle (not counting canned 429s).
    pub throttled_requests: u64,
    /// Path and query of each report request, in order.
    pub report_paths: Vec<String>,
    /// When each report request arrived (tokio time), in order: shows how a client spreads its
    /// requests over the throttle window.
    pub request_times: Vec<Instant>,
    /// The `client-request-id` header of each report request, in order (`None` when absent).
    pub client_request_ids: Vec<Option<String>>,
}

/// Statistics of a report nothing was recorded for.
pub(crate) static NO_REPORT_STATS: FakeReportStats = FakeReportStats {
    report_requests: 0,
    download_requests: 0,
    throttled_requests: 0,
    report_paths: Vec::new(),
    request_times: Vec::new(),
    client_request_ids: Vec::new(),
};

/// One row of the activation counts report: a product type and its activated devices per
/// platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakePlatformCounts {
    /// The product type; upper case in the CSV, Graph's mixed case in the JSON (as for
    /// [`FakeProduct::product_type`]).
    pub product_type: String,
    /// Activated Windows computers.
    pub windows: u64,
    /// Activated Macs.
    pub mac: u64,
    /// Activated Android devices (tablets and phones).
    pub android: u64,
    /// Activated iOS devices (tablets and phones).
    pub ios: u64,
    /// Activated Windows 10 Mobile devices.
    pub windows10_mobile: u64,
}

impl FakePlatformCounts {
    /// A row with the given counts, in the CSV's column order.
    pub fn new(
        product_type: impl Into<String>,
        windows: u64,
        mac: u64,
        android: u64,
        ios: u64,
        windows10_mobile: u64,
    ) -> Self {
        FakePlatformCounts {
            product_type: product_type.into(),
            windows,
            mac,
            android,
            ios,
            windows10_mobile,
        }
    }
}

/// One user of the user detail report: the CSV has one row per user and product, the JSON one
/// entry per user with a `userActivationCounts` item per product.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakeUser {
    /// The user principal name (an opaque 32-hex-digit hash when the tenant conceals names).
    pub user_principal_name: String,
    /// The display name (also a hash when concealed; may contain commas, which the CSV quotes).
    pub display_name: String,
    /// The user's products, in the order the report lists them; a user without any product gets
    /// no CSV row at all (and an empty `userActivationCounts` in the JSON).
    pub products: Vec<FakeUserProduct>,
}

impl FakeUser {
    /// A user without products yet (add them with [`FakeUser::with_product`]).
    pub fn new(user_principal_name: impl Into<String>, display_name: impl Into<String>) -> Self {
        FakeUser {
            user_principal_name: user_principal_name.into(),
            display_name: display_name.into(),
            products: Vec::new(),
        }
    }

    /// Adds a product row.
    pub fn with_product(mut self, product: FakeUserProduct) -> Self {
        self.products.push(product);
        self
    }
}

/// One user's activations of one product.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakeUserProduct {
    /// The product type (upper case in the CSV, mixed case in the JSON).
    pub product_type: String,
    /// The day of the latest activation; `None` for a user who never activated the product (an
    /// empty CSV field, `null` in the JSON).
    pub last_activated_date: Option<NaiveDate>,
    /// Activated Windows computers.
    pub windows: u64,
    /// Activated Macs.
    pub mac: u64,
    /// Activated Windows 10 Mobile devices.
    pub windows10_mobile: u64,
    /// Activated iOS devices.
    pub ios: u64,
    /// Activated Android devices.
    pub android: u64,
    /// Whether the user activated the product on a shared computer (CSV `True`/`False`).
    pub activated_on_shared_computer: bool,
}

impl FakeUserProduct {
    /// A product the user never activated: no date, no devices, no shared computer.
    pub fn new(product_type: impl Into<String>) -> Self {
        FakeUserProduct {
            product_type: product_type.into(),
            last_activated_date: None,
            windows: 0,
            mac: 0,
            windows10_mobile: 0,
            ios: 0,
            android: 0,
            activated_on_shared_computer: false,
        }
    }

    /// Sets the day of the latest activation.
    pub fn activated_on(mut self, date: NaiveDate) -> Self {
        self.last_activated_date = Some(date);
        self
    }

    /// Sets the device counts, in the CSV's column order (Windows, Mac, Windows 10 Mobile, iOS,
    /// Android).
    pub fn devices(
        mut self,
        windows: u64,
        mac: u64,
        windows10_mobile: u64,
        ios: u64,
        android: u64,
    ) -> Self {
        self.windows = windows;
        self.mac = mac;
        self.windows10_mobile = windows10_mobile;
        self.ios = ios;
        self.android = android;
        self
    }

    /// Sets whether the user activated the product on a shared computer.
    pub fn shared_computer(mut self, shared: bool) -> Self {
        self.activated_on_shared_computer = shared;
        self
    }

    /// PCs and Macs together: what the install limit (5) applies to.
    pub fn computers(&self) -> u64 {
        self.windows + self.mac
    }
}

/// The most users [`derived_users`] lists per product.
pub const DERIVED_USERS_CAP: u64 = 300;

/// The activation counts a fixed tenant serves when no test set them with
/// [`FakeGraph::set_activation_counts`](super::FakeGraph::set_activation_counts): one row per
/// product, in order, from its activated users `a`: Windows `a + a/2`, Mac `a/8`, Android `a/4`,
/// iOS `a/3`, Windows 10 Mobile `a/100` (integer division).
pub fn derived_activation_counts(products: &[FakeProduct]) -> Vec<FakePlatformCounts> {
    products
        .iter()
        .map(|p| {
            let a = p.activated;
            FakePlatformCounts::new(
                p.product_type.clone(),
                a.saturating_add(a / 2),
                a / 8,
                a / 4,
                a / 3,
                a / 100,
            )
        })
        .collect()
}

/// The user detail a fixed tenant serves when no test set users with
/// [`FakeGraph::set_users`](super::FakeGraph::set_users), derived from its products.
///
/// For a product with `assigned` A, `activated` X and `shared_computer_activation` S, the report
/// lists `n = min(A, DERIVED_USERS_CAP)` users, of whom `a = min(X·n/A, n)` activated it and
/// `s = min(S·n/A, a)` on a shared computer (integer division, so exactly X and S when A ≤ the
/// cap). The users are `user0000@fake.example`, `user0001@fake.example`, ... (display name
/// `User 0000`, except that every tenth, `j mod 10 = 7`, is `Tester, User 00j7` with a comma);
/// user `j` has a row for every product with `j < n`, in product order, so users share products.
/// Row `j` of a product, if `j < a`: Last Activated Date `refresh_date - (13·j mod 365)` days,
/// `1 + j mod 5` PCs and Macs of which one Mac if `j mod 4 = 3` (so `j mod 5 = 4` is at the
/// install limit), iOS `j mod 3`, Android `j mod 2`, Windows 10 Mobile 1 if `j mod 50 = 49`,
/// shared computer if `j < s`. If `j >= a`: never activated (no date, no devices).
pub fn derived_users(refresh_date: NaiveDate, products: &[FakeProduct]) -> Vec<FakeUser> {
    let listed: Vec<(u64, u64, u64)> = products
        .iter()
        .map(|p| {
            let n = p.assigned.min(DERIVED_USERS_CAP);
            let scale = |x: u64| {
                if p.assigned == 0 {
                    0
                } else {
                    u64::try_from(u128::from(x) * u128::from(n) / u128::from(p.assigned))
                        .unwrap_or(n)
                }
            };
            let a = scale(p.activated).min(n);
            let s = scale(p.shared_computer_activation).min(a);
            (n, a, s)
        })
        .collect();
    let users = listed.iter().map(|&(n, _, _)| n).max().unwrap_or(0);
    (0..users)
        .map(|j| {
            let display_name = if j % 10 == 7 {
                format!("Tester, User {j:04}")
            } else {
                format!("User {j:04}")
            };
            let mut user = FakeUser::new(format!("user{j:04}@fake.example"), display_name);
            for (p, &(n, a, s)) in products.iter().zip(&listed) {
                if j >= n {
                    continue;
                }
                let mut row = FakeUserProduct::new(p.product_type.clone());
                if j < a {
                    let computers = 1 + j % 5;
                    let mac = u64::from(j % 4 == 3);
                    row = row
                        .activated_on(days_before(refresh_date, (13 * j) % 365))
                        .devices(computers - mac, mac, u64::from(j % 50 == 49), j % 3, j % 2)
                        .shared_computer(j < s);
                }
                user.products.push(row);
            }
            user
        })
        .collect()
}

/// `date` minus `days` days (or `date` itself at the calendar's start).
pub(crate) fn days_before(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(days)).unwrap_or(date)
}

/// A tenant's report data as of one instant: taken under the state lock (cheap clones of shared
/// lists), rendered after the lock is released.
#[derive(Clone, Debug)]
pub(crate) struct DataSnapshot {
    /// The Report Refresh Date of every row.
    refresh_date: NaiveDate,
    /// The user counts rows.
    products: Vec<FakeProduct>,
    /// For a demo tenant: its seed and the wall-clock time the snapshot is of.
    demo: Option<(u64, SystemTime)>,
    /// Activation counts a test set explicitly.
    activation_counts: Option<Arc<Vec<FakePlatformCounts>>>,
    /// Users a test set explicitly.
    users: Option<Arc<Vec<FakeUser>>>,
}

impl DataSnapshot {
    /// The data of a tenant with report data `data` and the explicit lists a test set, as of
    /// wall-clock time `at` (which only a demo tenant depends on).
    pub(crate) fn take(
        data: &ReportData,
        activation_counts: Option<&Arc<Vec<FakePlatformCounts>>>,
        users: Option<&Arc<Vec<FakeUser>>>,
        at: SystemTime,
    ) -> Self {
        let (refresh_date, products, demo) = match data {
            ReportData::Fixed {
                refresh_date,
                products,
            } => (*refresh_date, products.clone(), None),
            ReportData::Demo { seed } => {
                let (date, products) = demo_products(*seed, at);
                (date, products, Some((*seed, at)))
            }
        };
        DataSnapshot {
            refresh_date,
            products,
            demo,
            activation_counts: activation_counts.cloned(),
            users: users.cloned(),
        }
    }

    /// The demo's users at the snapshot's time, if this is a demo tenant.
    fn demo_users(&self) -> Option<DemoUsers> {
        self.demo
            .map(|(seed, _)| DemoUsers::new(seed, self.refresh_date, &self.products))
    }

    /// The activation counts rows: explicit, else the demo's (the device totals of its users),
    /// else derived from the products.
    fn activation_counts(&self) -> Cow<'_, [FakePlatformCounts]> {
        if let Some(explicit) = &self.activation_counts {
            return Cow::Borrowed(explicit.as_slice());
        }
        match self.demo_users() {
            Some(demo) => Cow::Owned(demo.activation_counts()),
            None => Cow::Owned(derived_activation_counts(&self.products)),
        }
    }

    /// The user detail's users: explicit, else the demo's, else derived from the products.
    fn users(&self) -> UserList {
        if let Some(explicit) = &self.users {
            return UserList::Shared(Arc::clone(explicit));
        }
        match self.demo_users() {
            Some(demo) => UserList::Demo(demo),
            None => UserList::Owned(derived_users(self.refresh_date, &self.products)),
        }
    }

    /// The wall-clock time the snapshot is of (now, for a fixed tenant), in whole seconds since
    /// the epoch, as a next-page token keeps it.
    fn at_secs(&self, now: SystemTime) -> u64 {
        self.demo
            .map_or(now, |(_, at)| at)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }
}

/// The users of a user detail report, listed or computed one by one (a demo tenant's few
/// thousand users are never all held at once).
enum UserList {
    /// Users a test set.
    Shared(Arc<Vec<FakeUser>>),
    /// Users derived from the products.
    Owned(Vec<FakeUser>),
    /// A demo tenant's users, computed by index.
    Demo(DemoUsers),
}

impl UserList {
    /// How many users the report lists.
    fn len(&self) -> usize {
        match self {
            UserList::Shared(users) => users.len(),
            UserList::Owned(users) => users.len(),
            UserList::Demo(demo) => demo.len(),
        }
    }

    /// The users at positions `range` (clamped to the list).
    fn page(&self, range: Range<usize>) -> Cow<'_, [FakeUser]> {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        match self {
            UserList::Shared(users) => Cow::Borrowed(&users[start..end]),
            UserList::Owned(users) => Cow::Borrowed(&users[start..end]),
            UserList::Demo(demo) => Cow::Owned((start..end).map(|i| demo.user(i)).collect()),
        }
    }

    /// Calls `f` on every user, in order.
    fn for_each(&self, mut f: impl FnMut(&FakeUser)) {
        match self {
            UserList::Shared(users) => users.iter().for_each(f),
            UserList::Owned(users) => users.iter().for_each(f),
            UserList::Demo(demo) => (0..demo.len()).for_each(|i| f(&demo.user(i))),
        }
    }
}

/// The CSV the download host serves for `report`: UTF-8 BOM, header, CRLF line endings with a
/// trailing CRLF, product types in upper case. Linear in the number of rows.
pub(crate) fn render_csv(report: FakeReport, snapshot: &DataSnapshot) -> Bytes {
    let date = snapshot.refresh_date.format("%Y-%m-%d").to_string();
    let mut out = String::with_capacity(256);
    out.push('\u{FEFF}');
    out.push_str(report.csv_header());
    out.push_str("\r\n");
    // `write!` into a String cannot fail; the results are ignored for that reason.
    match report {
        FakeReport::UserCounts => {
            for p in &snapshot.products {
                let _ = write!(
                    out,
                    "{date},{},{},{},{}\r\n",
                    csv_field(&p.product_type.to_uppercase()),
                    p.assigned,
                    p.activated,
                    p.shared_computer_activation
                );
            }
        }
        FakeReport::ActivationCounts => {
            for c in snapshot.activation_counts().iter() {
                let _ = write!(
                    out,
                    "{date},{},{},{},{},{},{}\r\n",
                    csv_field(&c.product_type.to_uppercase()),
                    c.windows,
                    c.mac,
                    c.android,
                    c.ios,
                    c.windows10_mobile
                );
            }
        }
        FakeReport::UserDetail => {
            let users = snapshot.users();
            out.reserve(users.len() * 160);
            users.for_each(|u| {
                let upn = csv_field(&u.user_principal_name);
                let name = csv_field(&u.display_name);
                for p in &u.products {
                    let last = p
                        .last_activated_date
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default();
                    let _ = write!(
                        out,
                        "{date},{upn},{name},{},{last},{},{},{},{},{},{}\r\n",
                        csv_field(&p.product_type.to_uppercase()),
                        p.windows,
                        p.mac,
                        p.windows10_mobile,
                        p.ios,
                        p.android,
                        if p.activated_on_shared_computer {
                            "True"
                        } else {
                            "False"
                        }
                    );
                }
            });
        }
    }
    Bytes::from(out)
}

/// Where a JSON (beta) page starts and how long it is, decoded from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// Position of the page's first user.
    pub(crate) offset: usize,
    /// Users per page: `$top` if the client sent one, else `FakeGraphOptions::json_page_size`.
    pub(crate) size: usize,
    /// The client's `$top`, repeated in the next page's link.
    pub(crate) top: Option<usize>,
    /// The wall-clock time (seconds since the epoch) of the first page's snapshot, so that every
    /// page of one listing shows the same (demo) data.
    pub(crate) snapshot_secs: Option<u64>,
}

impl PageRequest {
    /// The first page, `size` users long.
    pub(crate) fn first(size: usize) -> Self {
        PageRequest {
            offset: 0,
            size,
            top: None,
            snapshot_secs: None,
        }
    }
}

/// An opaque `$skiptoken`: 32 upper-case hex digits holding the next page's offset and the
/// listing's snapshot time, scrambled so that they do not read as numbers.
pub(crate) fn encode_skiptoken(offset: u64, snapshot_secs: u64) -> String {
    const SCRAMBLE: u64 = 0x5DEE_CE66_D1CE_F00D;
    format!(
        "{:016X}{:016X}",
        offset ^ SCRAMBLE,
        snapshot_secs ^ SCRAMBLE.rotate_left(17)
    )
}

/// The `(offset, snapshot_secs)` of a token made by [`encode_skiptoken`], if it is one.
pub(crate) fn decode_skiptoken(token: &str) -> Option<(u64, u64)> {
    const SCRAMBLE: u64 = 0x5DEE_CE66_D1CE_F00D;
    if token.len() != 32 || !token.is_ascii() {
        return None;
    }
    let offset = u64::from_str_radix(&token[..16], 16).ok()? ^ SCRAMBLE;
    let secs = u64::from_str_radix(&token[16..], 16).ok()? ^ SCRAMBLE.rotate_left(17);
    Some((offset, secs))
}

/// The wall-clock time a next-page token fixed, for taking the later pages' snapshot.
pub(crate) fn snapshot_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The Graph JSON (beta) envelope of a report.
#[derive(Serialize)]
struct JsonEnvelope<'a, T: Serialize> {
    /// OData context, as Graph sends it.
    #[serde(rename = "@odata.context")]
    context: &'a str,
    /// The next page's absolute URL; absent on the last page.
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
    /// The rows.
    value: T,
}

/// One product in the user counts JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonUserCountsRow<'a> {
    /// `YYYY-MM-DD`.
    report_refresh_date: &'a str,
    /// Mixed-case product name.
    product_type: String,
    /// Assigned users.
    assigned: u64,
    /// Activated users.
    activated: u64,
    /// Users with shared computer activation.
    shared_computer_activation: u64,
}

/// One product in the activation counts JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonActivationCountsRow<'a> {
    /// `YYYY-MM-DD`.
    report_refresh_date: &'a str,
    /// Mixed-case product name.
    product_type: String,
    /// Windows computers.
    windows: u64,
    /// Macs.
    mac: u64,
    /// Android devices.
    android: u64,
    /// iOS devices.
    ios: u64,
    /// Windows 10 Mobile devices.
    windows10_mobile: u64,
}

/// One user in the user detail JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonUser<'a> {
    /// `YYYY-MM-DD`.
    report_refresh_date: &'a str,
    /// UPN (or its hash).
    user_principal_name: &'a str,
    /// Display name (or its hash).
    display_name: &'a str,
    /// One entry per product.
    user_activation_counts: Vec<JsonUserProduct>,
}

/// One product of one user in the user detail JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonUserProduct {
    /// Mixed-case product name.
    product_type: String,
    /// `YYYY-MM-DD`, or `null` when never activated.
    last_activated_date: Option<String>,
    /// Windows computers.
    windows: u64,
    /// Macs.
    mac: u64,
    /// Windows 10 Mobile devices.
    windows10_mobile: u64,
    /// iOS devices.
    ios: u64,
    /// Android devices.
    android: u64,
    /// Shared computer activation.
    activated_on_shared_computer: bool,
}

/// The JSON (beta) answer for `report`. `origin` is the Graph host as the client addressed it
/// (`https://host[:port]`), used in `@odata.context` and in the user detail's absolute
/// `@odata.nextLink`, which is present unless the page is the last one. `now` is the wall-clock
/// time a fixed tenant's first page records in its next-page token.
pub(crate) fn render_json(
    report: FakeReport,
    snapshot: &DataSnapshot,
    origin: &str,
    page: PageRequest,
    now: SystemTime,
) -> Bytes {
    let context = format!(
        "{origin}/beta/$metadata#Collection({})",
        report.odata_type()
    );
    let date = snapshot.refresh_date.format("%Y-%m-%d").to_string();
    let body = match report {
        FakeReport::UserCounts => serde_json::to_vec(&JsonEnvelope {
            context: &context,
            next_link: None,
            value: snapshot
                .products
                .iter()
                .map(|p| JsonUserCountsRow {
                    report_refresh_date: &date,
                    product_type: json_product_name(&p.product_type),
                    assigned: p.assigned,
                    activated: p.activated,
                    shared_computer_activation: p.shared_computer_activation,
                })
                .collect::<Vec<_>>(),
        }),
        FakeReport::ActivationCounts => serde_json::to_vec(&JsonEnvelope {
            context: &context,
            next_link: None,
            value: snapshot
                .activation_counts()
                .iter()
                .map(|c| JsonActivationCountsRow {
                    report_refresh_date: &date,
                    product_type: json_product_name(&c.product_type),
                    windows: c.windows,
                    mac: c.mac,
                    android: c.android,
                    ios: c.ios,
                    windows10_mobile: c.windows10_mobile,
                })
                .collect::<Vec<_>>(),
        }),
        FakeReport::UserDetail => {
            let users = snapshot.users();
            let size = page.size.max(1);
            let end = page.offset.saturating_add(size);
            let next_link = (end < users.len()).then(|| {
                let token = encode_skiptoken(end as u64, snapshot.at_secs(now));
                let top = page.top.map(|t| format!("&$top={t}")).unwrap_or_default();
                format!(
                    "{origin}/beta/reports/{}?$format=application%2Fjson{top}&$skiptoken={token}",
                    report.api_name()
                )
            });
            let listed = users.page(page.offset..end);
            serde_json::to_vec(&JsonEnvelope {
                context: &context,
                next_link,
                value: listed
                    .iter()
                    .map(|u| JsonUser {
                        report_refresh_date: &date,
                        user_principal_name: &u.user_principal_name,
                        display_name: &u.display_name,
                        user_activation_counts: u
                            .products
                            .iter()
                            .map(|p| JsonUserProduct {
                                product_type: json_product_name(&p.product_type),
                                last_activated_date: p
                                    .last_activated_date
                                    .map(|d| d.format("%Y-%m-%d").to_string()),
                                windows: p.windows,
                                mac: p.mac,
                                windows10_mobile: p.windows10_mobile,
                                ios: p.ios,
                                android: p.android,
                                activated_on_shared_computer: p.activated_on_shared_computer,
                            })
                            .collect(),
                    })
                    .collect::<Vec<_>>(),
            })
        }
    };
    Bytes::from(body.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
    }

    fn products() -> Vec<FakeProduct> {
        vec![
            FakeProduct::new("MICROSOFT 365 APPS FOR ENTERPRISE", 2679, 1710, 1024),
            FakeProduct::new("PROJECT ONLINE DESKTOP CLIENT", 120, 88, 0),
        ]
    }

    fn fixed(products: Vec<FakeProduct>) -> DataSnapshot {
        DataSnapshot::take(
            &ReportData::Fixed {
                refresh_date: date(),
                products,
            },
            None,
            None,
            SystemTime::now(),
        )
    }

    /// Rows of `product` in a user list.
    fn rows<'a>(users: &'a [FakeUser], product: &str) -> Vec<&'a FakeUserProduct> {
        users
            .iter()
            .flat_map(|u| &u.products)
            .filter(|p| p.product_type == product)
            .collect()
    }

    #[test]
    fn report_names_round_trip() {
        for r in FakeReport::ALL {
            assert_eq!(FakeReport::from_api_name(r.api_name()), Some(r));
            let lower = r.api_name().to_ascii_lowercase();
            assert_eq!(FakeReport::from_api_name(&lower), Some(r));
            assert!(r.file_name().ends_with(".csv"));
            assert!(r.csv_header().starts_with("Report Refresh Date,"));
        }
        assert_eq!(
            FakeReport::from_api_name("getOffice365ActiveUserCounts"),
            None
        );
        let names: Vec<_> = FakeReport::ALL.iter().map(|r| r.config_name()).collect();
        assert_eq!(names, ["user_counts", "activation_counts", "user_detail"]);
    }

    #[test]
    fn derived_activation_counts_follow_the_documented_rule() {
        let counts = derived_activation_counts(&products());
        assert_eq!(
            counts,
            vec![
                FakePlatformCounts::new(
                    "MICROSOFT 365 APPS FOR ENTERPRISE",
                    2565,
                    213,
                    427,
                    570,
                    17
                ),
                FakePlatformCounts::new("PROJECT ONLINE DESKTOP CLIENT", 132, 11, 22, 29, 0),
            ]
        );
        assert!(derived_activation_counts(&[]).is_empty());
    }

    #[test]
    fn derived_users_follow_the_documented_rule() {
        let users = derived_users(date(), &products());
        assert_eq!(users, derived_users(date(), &products()), "deterministic");
        // Capped: 2679 assigned -> 300 listed, 1710·300/2679 = 191 activated, 1024·300/2679 =
        // 114 shared; Project is under the cap, so exactly its numbers.
        assert_eq!(users.len(), DERIVED_USERS_CAP as usize);
        let m365 = rows(&users, "MICROSOFT 365 APPS FOR ENTERPRISE");
        let project = rows(&users, "PROJECT ONLINE DESKTOP CLIENT");
        assert_eq!(m365.len(), 300);
        assert_eq!(project.len(), 120);
        let activated =
            |r: &[&FakeUserProduct]| r.iter().filter(|p| p.last_activated_date.is_some()).count();
        let shared =
            |r: &[&FakeUserProduct]| r.iter().filter(|p| p.activated_on_shared_computer).count();
        assert_eq!((activated(&m365), shared(&m365)), (191, 114));
        assert_eq!((activated(&project), shared(&project)), (88, 0));
        // Users share products: the first 120 have both, in product order.
        assert_eq!(users[0].products.len(), 2);
        assert_eq!(users[119].products.len(), 2);
        assert_eq!(users[120].products.len(), 1);
        assert_eq!(users[42].user_principal_name, "user0042@fake.example");
        assert_eq!(users[42].display_name, "User 0042");
        assert_eq!(users[47].display_name, "Tester, User 0047");
        // Row j: 1 + j mod 5 computers, one of them a Mac when j mod 4 = 3.
        let row = &users[3].products[0];
        assert_eq!((row.windows, row.mac, row.ios, row.android), (3, 1, 0, 1));
        assert_eq!(row.last_activated_date, Some(days_before(date(), 39)));
        let at_limit = m365.iter().filter(|p| p.computers() >= 5).count();
        assert_eq!(at_limit, 191 / 5 + usize::from(191 % 5 == 4));
        let never = &users[250].products[0];
        assert_eq!(
            never,
            &FakeUserProduct::new("MICROSOFT 365 APPS FOR ENTERPRISE")
        );
        assert!(derived_users(date(), &[]).is_empty());
        // A product with nobody assigned lists nobody, whatever its other numbers.
        assert!(derived_users(date(), &[FakeProduct::new("X", 0, 5, 5)]).is_empty());
    }

    #[test]
    fn csv_of_each_report_has_bom_header_and_crlf() {
        let snapshot = fixed(products());
        for report in FakeReport::ALL {
            let csv = render_csv(report, &snapshot);
            let text = std::str::from_utf8(&csv).unwrap();
            let text = text.strip_prefix('\u{FEFF}').expect("BOM");
            assert!(text.starts_with(&format!("{}\r\n", report.csv_header())));
            assert!(text.ends_with("\r\n"));
            assert!(
                !text.replace("\r\n", "").contains('\n'),
                "{report:?}: bare LF"
            );
            for line in text.trim_end().split("\r\n").skip(1) {
                assert!(line.starts_with("2026-11-25,"), "{line}");
            }
        }
        let csv = render_csv(FakeReport::ActivationCounts, &snapshot);
        assert!(csv.ends_with(b"\r\n2026-11-25,PROJECT ONLINE DESKTOP CLIENT,132,11,22,29,0\r\n"));
        let csv = render_csv(FakeReport::UserDetail, &snapshot);
        let text = std::str::from_utf8(&csv).unwrap();
        assert_eq!(text.trim_end().split("\r\n").count(), 1 + 420);
        assert!(text.contains(
            "\r\n2026-11-25,user0003@fake.example,User 0003,MICROSOFT 365 APPS FOR ENTERPRISE,2026-10-17,3,1,0,0,1,True\r\n"
        ));
        assert!(text.contains(
            "\r\n2026-11-25,user0047@fake.example,\"Tester, User 0047\",MICROSOFT 365 APPS FOR ENTERPRISE,"
        ));
        assert!(text.contains(
            "\r\n2026-11-25,user0250@fake.example,User 0250,MICROSOFT 365 APPS FOR ENTERPRISE,,0,0,0,0,0,False\r\n"
        ));
        // No products: header-only files.
        let empty = fixed(vec![]);
        for report in FakeReport::ALL {
            let csv = render_csv(report, &empty);
            assert_eq!(
                csv,
                format!("\u{FEFF}{}\r\n", report.csv_header()).as_bytes()
            );
        }
    }

    #[test]
    fn explicit_lists_win_over_derived_ones() {
        let counts = Arc::new(vec![FakePlatformCounts::new(
            "Visio Online Plan 2",
            1,
            2,
            3,
            4,
            5,
        )]);
        let users = Arc::new(vec![FakeUser::new("a@b.example", "A").with_product(
            FakeUserProduct::new("Visio Online Plan 2")
                .activated_on(date())
                .devices(5, 0, 0, 1, 0)
                .shared_computer(true),
        )]);
        let data = ReportData::Fixed {
            refresh_date: date(),
            products: products(),
        };
        let snapshot = DataSnapshot::take(&data, Some(&counts), Some(&users), SystemTime::now());
        assert_eq!(
            render_csv(FakeReport::ActivationCounts, &snapshot),
            "\u{FEFF}Report Refresh Date,Product Type,Windows,Mac,Android,iOS,Windows 10 Mobile\r\n2026-11-25,VISIO ONLINE PLAN 2,1,2,3,4,5\r\n".as_bytes()
        );
        assert!(render_csv(FakeReport::UserDetail, &snapshot).ends_with(
            b"\r\n2026-11-25,a@b.example,A,VISIO ONLINE PLAN 2,2026-11-25,5,0,0,1,0,True\r\n"
        ));
        let json: serde_json::Value = serde_json::from_slice(&render_json(
            FakeReport::UserDetail,
            &snapshot,
            "https://graph.example",
            PageRequest::first(200),
            SystemTime::now(),
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "@odata.context": "https://graph.example/beta/$metadata#Collection(microsoft.graph.office365ActivationsUserDetail)",
                "value": [{
                    "reportRefreshDate": "2026-11-25",
                    "userPrincipalName": "a@b.example",
                    "displayName": "A",
                    "userActivationCounts": [{
                        "productType": "Visio Online Plan 2",
                        "lastActivatedDate": "2026-11-25",
                        "windows": 5, "mac": 0, "windows10Mobile": 0, "ios": 1, "android": 0,
                        "activatedOnSharedComputer": true
                    }]
                }]
            })
        );
    }

    #[test]
    fn json_pages_chain_by_skiptoken_and_cover_every_user_once() {
        let snapshot = fixed(products());
        let now = SystemTime::now();
        let mut page = PageRequest::first(7);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let v: serde_json::Value = serde_json::from_slice(&render_json(
                FakeReport::UserDetail,
                &snapshot,
                "https://graph.example:8443",
                page,
                now,
            ))
            .unwrap();
            let value = v["value"].as_array().unwrap();
            assert!(value.len() <= 7);
            seen.extend(value.iter().map(|u| u["userPrincipalName"].clone()));
            let Some(next) = v["@odata.nextLink"].as_str() else {
                break;
            };
            let token = next
                .strip_prefix("https://graph.example:8443/beta/reports/getOffice365ActivationsUserDetail?$format=application%2Fjson&$skiptoken=")
                .expect(next);
            let (offset, secs) = decode_skiptoken(token).unwrap();
            page.offset = offset as usize;
            page.snapshot_secs = Some(secs);
        }
        assert_eq!(pages, 300usize.div_ceil(7));
        let mut unique = seen.clone();
        unique.sort_by_key(|u| u.to_string());
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (300, 300));

        // The other reports are one page, whatever the page size.
        for report in [FakeReport::UserCounts, FakeReport::ActivationCounts] {
            let v: serde_json::Value = serde_json::from_slice(&render_json(
                report,
                &snapshot,
                "https://g",
                PageRequest::first(1),
                now,
            ))
            .unwrap();
            assert_eq!(v["value"].as_array().unwrap().len(), 2, "{report:?}");
            assert!(v.get("@odata.nextLink").is_none());
        }
    }

    #[test]
    fn skiptokens_round_trip_and_reject_garbage() {
        for (offset, secs) in [(0, 0), (200, 1_795_773_600), (u64::MAX, u64::MAX)] {
            let token = encode_skiptoken(offset, secs);
            assert_eq!(token.len(), 32);
            assert_eq!(decode_skiptoken(&token), Some((offset, secs)));
        }
        for bad in [
            "",
            "abc",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "é123456789012345678901234567890",
        ] {
            assert_eq!(decode_skiptoken(bad), None, "{bad}");
        }
    }
}
