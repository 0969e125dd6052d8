//! The demo tenants and their slowly drifting numbers.
//!
//! `--demo` runs the exporter against a [`FakeGraph`](super::FakeGraph) started with
//! [`FakeGraphOptions::demo`](super::FakeGraphOptions::demo), with no credentials: the exporter
//! builds its configuration from [`DEMO_TENANTS`]. The report numbers of a
//! [`ReportData::Demo`](super::ReportData::Demo) tenant are a pure function of its seed and the
//! wall-clock time ([`demo_products`]), so dashboards show smooth movement (a slow trend, a daily
//! shape, a few percent within an hour) while tests can pin the values down exactly. The user
//! detail ([`demo_users`]) lists, at any instant, exactly the users those numbers count, each
//! with seed-derived devices and activation dates; the activation counts
//! ([`demo_activation_counts`]) are their device totals.

use std::f64::consts::TAU;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::reports::days_before;
use super::{FakePlatformCounts, FakeProduct, FakeUser, FakeUserProduct};

/// The demo tenants, as `(name, tenant_id, client_id, client_secret)`: the exporter's `--demo`
/// builds its tenant configuration from this, and [`FakeGraphOptions::demo`] registers the same
/// tenants with the fake, so both sides agree without any user input.
///
/// [`FakeGraphOptions::demo`]: super::FakeGraphOptions::demo
pub const DEMO_TENANTS: &[(&str, &str, &str, &str)] = &[
    (
        "contoso",
        "11111111-2222-3333-4444-555555555555",
        "c0c0c0c0-0000-4000-8000-000000000001",
        "demo-contoso-client-secret",
    ),
    (
        "fabrikam",
        "66666666-7777-8888-9999-000000000000",
        "fabfabfa-0000-4000-8000-000000000002",
        "demo-fabrikam-client-secret",
    ),
];

/// The [`ReportData::Demo`](super::ReportData::Demo) seed of each entry of [`DEMO_TENANTS`] (same
/// order). The seeds pick the product set: contoso's gives all five product types of
/// [`DEMO_PRODUCT_TYPES`], fabrikam's the first three (see [`demo_products`]).
pub const DEMO_SEEDS: &[u64] = &[42, 1337];

/// The product types a demo tenant can have, in the upper case the real CSV uses; a tenant gets a
/// prefix of this list.
pub const DEMO_PRODUCT_TYPES: &[&str] = &[
    "MICROSOFT 365 APPS FOR ENTERPRISE",
    "MICROSOFT 365 APPS FOR BUSINESS",
    "PROJECT ONLINE DESKTOP CLIENT",
    "VISIO ONLINE PLAN 2",
    "MICROSOFT EXCEL ADVANCED ANALYTICS",
];

/// Relative size of each product in [`DEMO_PRODUCT_TYPES`] against the tenant's main licence.
const PRODUCT_WEIGHTS: &[f64] = &[1.0, 0.35, 0.06, 0.045, 0.02];

/// Seconds in a day, the period of the daily shape.
const DAY: f64 = 86_400.0;

/// SplitMix64 finaliser: turns a seed and a salt into well-mixed bits, so every parameter of
/// every product derives deterministically from the tenant's seed.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic number in `[0, 1)` from a seed and a salt.
fn unit(seed: u64, salt: u64) -> f64 {
    (mix(seed, salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// A deterministic phase in `[0, 2π)` from a seed and a salt.
fn phase(seed: u64, salt: u64) -> f64 {
    unit(seed, salt) * TAU
}

/// The report a demo tenant with `seed` shows at wall-clock time `at`: its refresh date (the UTC
/// day of `at` minus two days, as real reports lag) and one row per product type.
///
/// How many product types: `5 - seed % 3` leading entries of [`DEMO_PRODUCT_TYPES`]. Each
/// product's numbers follow a slow trend (±6 % over ~45 days), a daily shape, and a weekly wobble
/// of the activation ratio; the activated share moves by up to about 2 percentage points per
/// hour. Always `shared_computer_activation <= activated <= assigned`, and `assigned >= 1`.
pub fn demo_products(seed: u64, at: SystemTime) -> (NaiveDate, Vec<FakeProduct>) {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = since_epoch.as_secs_f64();
    let today = DateTime::<Utc>::from(UNIX_EPOCH + since_epoch).date_naive();
    let refresh_date = today.checked_sub_days(Days::new(2)).unwrap_or(today);

    let count = DEMO_PRODUCT_TYPES.len() - (seed % 3) as usize;
    let tenant_size = 400.0 + 4_600.0 * unit(seed, 0);
    let products = DEMO_PRODUCT_TYPES
        .iter()
        .zip(PRODUCT_WEIGHTS)
        .take(count)
        .enumerate()
        .map(|(i, (name, weight))| {
            let salt = 16 * (i as u64 + 1);
            let base = tenant_size * weight * (0.8 + 0.4 * unit(seed, salt));
            let trend = 1.0 + 0.06 * (TAU * t / (45.0 * DAY) + phase(seed, salt + 1)).sin();
            let daily = 1.0 + 0.01 * (TAU * t / DAY + phase(seed, salt + 2)).sin();
            let assigned = (base * trend * daily).round().max(1.0);

            let ratio = (0.6
                + 0.25 * unit(seed, salt + 3)
                + 0.06 * (TAU * t / DAY + phase(seed, salt + 4)).sin()
                + 0.02 * (TAU * t / (7.0 * DAY) + phase(seed, salt + 5)).sin())
            .clamp(0.05, 0.98);
            let activated = (assigned * ratio).round().min(assigned);

            let shared_ratio = ((0.05 + 0.35 * unit(seed, salt + 6))
                * (1.0 + 0.08 * (TAU * t / DAY + phase(seed, salt + 7)).sin()))
            .clamp(0.0, 1.0);
            let shared = (activated * shared_ratio).round().min(activated);

            FakeProduct {
                product_type: (*name).to_string(),
                assigned: assigned as u64,
                activated: activated as u64,
                shared_computer_activation: shared as u64,
            }
        })
        .collect();
    (refresh_date, products)
}

/// How a demo tenant names its users in the user detail report.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Naming {
    /// `user0042@<domain>` and a made-up full name.
    Plain {
        /// The tenant's verified domain, e.g. `contoso.example`.
        domain: String,
    },
    /// 32 upper-case hex digits for both, as Graph shows since 2021 by default.
    Concealed,
}

/// First names for the demo's plain display names.
const FIRST_NAMES: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Diego",
    "Grady",
    "Henrietta",
    "Isaiah",
    "Johanna",
    "Joni",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Sakura",
    "Wei",
    "Zeynep",
];

/// Last names for the demo's plain display names.
const LAST_NAMES: &[&str] = &[
    "Archibald",
    "Brown",
    "Cruz",
    "Deyoung",
    "Gonzalez",
    "Holt",
    "Ito",
    "Kowalski",
    "Langer",
    "Mueller",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quinn",
    "Rossi",
    "Sherman",
    "Tanaka",
    "Vance",
    "Wilber",
    "Zhou",
];

/// The user detail of a demo tenant at one instant, computed user by user (so a listing of a few
/// thousand users is never held at once, and a page costs only its own users).
///
/// The rule, for the products `p_0, p_1, ...` of [`demo_products`] at that instant: the tenant's
/// people are the `A_0 + A_1` users of its two main licences (`p_0`'s assigned users first, then
/// `p_1`'s; one licence each); every further product (an add-on such as Project or Visio) is
/// assigned to `min(A_i, people)` of them (`A_i` in practice), spread evenly. So each product
/// lists its `assigned` users, of whom its first `activated` activated it and its first
/// `shared_computer_activation` on a shared computer: the user detail agrees with the user counts
/// at the same instant, and the activation counts are the device totals of the user detail.
///
/// Each activated row has per-row, seed-derived traits: PCs and Macs 1 to 5 (about 8 % of
/// activated rows at the install limit of 5, some Mac users), for the main licences also phones
/// and tablets (about 4 % mobile-only, with no computer), rarely a Windows 10 Mobile device, and
/// a last activation that recurs every 30 to 364 days (so Last Activated Date is spread over a
/// year and moves once a day). Names are plain (`user0042@contoso.example`, `Megan Deyoung`, now
/// and then `Deyoung, Megan`) for even seeds, concealed 32-hex-digit hashes for odd ones.
#[derive(Clone, Debug)]
pub(crate) struct DemoUsers {
    /// The tenant's seed.
    seed: u64,
    /// The report's refresh date.
    refresh_date: NaiveDate,
    /// The refresh date as days since 1970-01-01, the clock of the activation cycles.
    day: u64,
    /// The products at this instant.
    products: Vec<FakeProduct>,
    /// How many leading products are main licences (1 or 2).
    main: usize,
    /// People: the sum of the main licences' assigned users.
    people: u64,
    /// For each add-on product (after the main ones): `(listed users, stride)`; person `g` has
    /// it if `g % stride == 0 && g / stride < listed`.
    addons: Vec<(u64, u64)>,
    /// Plain or concealed names.
    naming: Naming,
}

impl DemoUsers {
    /// The user detail of demo tenant `seed` whose user counts at that instant are `products`
    /// (from [`demo_products`]) with refresh date `refresh_date`.
    pub(crate) fn new(seed: u64, refresh_date: NaiveDate, products: &[FakeProduct]) -> Self {
        let main = products.len().min(2);
        let people: u64 = products[..main].iter().map(|p| p.assigned).sum();
        let addons = products[main..]
            .iter()
            .map(|p| {
                let listed = p.assigned.min(people);
                (listed, people.checked_div(listed).unwrap_or(1))
            })
            .collect();
        let day = refresh_date
            .signed_duration_since(NaiveDate::default())
            .num_days()
            .max(0) as u64;
        let naming = if seed % 2 == 1 {
            Naming::Concealed
        } else {
            let name = DEMO_SEEDS
                .iter()
                .position(|&s| s == seed)
                .map(|i| DEMO_TENANTS[i].0.to_string())
                .unwrap_or_else(|| format!("demo{seed}"));
            Naming::Plain {
                domain: format!("{name}.example"),
            }
        };
        DemoUsers {
            seed,
            refresh_date,
            day,
            products: products.to_vec(),
            main,
            people,
            addons,
            naming,
        }
    }

    /// How many users the report lists.
    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.people).unwrap_or(usize::MAX)
    }

    /// A number in `[0, 1)` for trait `salt` of row `k` of product `product`.
    fn trait_unit(&self, product: usize, k: u64, salt: u64) -> f64 {
        unit(mix(self.seed, 0xD37A_0000 + product as u64), k * 16 + salt)
    }

    /// Row `k` (0-based, within the product) of product `product`.
    fn row(&self, product: usize, k: u64) -> FakeUserProduct {
        let p = &self.products[product];
        let row = FakeUserProduct::new(p.product_type.clone());
        if k >= p.activated {
            return row;
        }
        let main = product < self.main;
        let mobile_only = main && self.trait_unit(product, k, 0) < 0.04;
        let computers = if mobile_only {
            0
        } else {
            let u = self.trait_unit(product, k, 1);
            match u {
                u if u < 0.44 => 1,
                u if u < 0.70 => 2,
                u if u < 0.84 => 3,
                u if u < 0.92 => 4,
                _ => 5,
            }
        };
        let u = self.trait_unit(product, k, 2);
        let mac = if u < 0.12 {
            computers
        } else if u < 0.20 {
            computers.min(1)
        } else {
            0
        };
        let (ios, android, w10m) = if main {
            let ios = match self.trait_unit(product, k, 3) {
                u if u < 0.40 => 0,
                u if u < 0.75 => 1,
                u if u < 0.95 => 2,
                _ => 3,
            };
            let android = match self.trait_unit(product, k, 4) {
                u if u < 0.60 => 0,
                u if u < 0.90 => 1,
                _ => 2,
            };
            let w10m = u64::from(self.trait_unit(product, k, 5) < 0.005);
            (ios, android, w10m)
        } else {
            (0, 0, 0)
        };
        let (ios, android) = if mobile_only && ios + android + w10m == 0 {
            (1, android)
        } else {
            (ios, android)
        };
        let period = 30 + (335.0 * self.trait_unit(product, k, 6)) as u64;
        let phase = (period as f64 * self.trait_unit(product, k, 7)) as u64;
        let ago = (self.day + phase) % period;
        row.activated_on(days_before(self.refresh_date, ago))
            .devices(computers - mac, mac, w10m, ios, android)
            .shared_computer(k < p.shared_computer_activation)
    }

    /// How many rows product `product` has.
    fn rows(&self, product: usize) -> u64 {
        if product < self.main {
            self.products[product].assigned
        } else {
            self.addons[product - self.main].0
        }
    }

    /// The user at position `g` (`g < len()`).
    pub(crate) fn user(&self, g: usize) -> FakeUser {
        let g = g as u64;
        let mut products = Vec::with_capacity(2);
        let first = self.products.first().map_or(0, |p| p.assigned);
        if self.main > 0 {
            let (product, k) = if g < first { (0, g) } else { (1, g - first) };
            products.push(self.row(product, k));
        }
        for (i, &(listed, stride)) in self.addons.iter().enumerate() {
            if g % stride == 0 && g / stride < listed {
                products.push(self.row(self.main + i, g / stride));
            }
        }
        let (upn, display_name) = match &self.naming {
            Naming::Plain { domain } => {
                let h = mix(self.seed, 0x4E41_4D45_0000_0000 ^ g);
                let first = FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize];
                let last = LAST_NAMES[((h >> 16) % LAST_NAMES.len() as u64) as usize];
                let display = if (h >> 32) % 8 == 0 {
                    format!("{last}, {first}")
                } else {
                    format!("{first} {last}")
                };
                (format!("user{g:04}@{domain}"), display)
            }
            Naming::Concealed => {
                let hash = |salt: u64| {
                    format!(
                        "{:016X}{:016X}",
                        mix(self.seed, salt ^ g),
                        mix(self.seed, salt ^ g ^ 0xFFFF_0000_0000)
                    )
                };
                (hash(0x5550_4E00_0000_0000), hash(0x4449_5300_0000_0000))
            }
        };
        FakeUser {
            user_principal_name: upn,
            display_name,
            products,
        }
    }

    /// The activation counts at this instant: the device totals of every product's rows.
    pub(crate) fn activation_counts(&self) -> Vec<FakePlatformCounts> {
        (0..self.products.len())
            .map(|product| {
                let mut counts = FakePlatformCounts::new(
                    self.products[product].product_type.clone(),
                    0,
                    0,
                    0,
                    0,
                    0,
                );
                for k in 0..self.rows(product).min(self.products[product].activated) {
                    let row = self.row(product, k);
                    counts.windows += row.windows;
                    counts.mac += row.mac;
                    counts.android += row.android;
                    counts.ios += row.ios;
                    counts.windows10_mobile += row.windows10_mobile;
                }
                counts
            })
            .collect()
    }
}

/// The activation counts report of a demo tenant at wall-clock time `at`: the device totals of
/// [`demo_users`] at the same instant, per product of [`demo_products`].
pub fn demo_activation_counts(seed: u64, at: SystemTime) -> (NaiveDate, Vec<FakePlatformCounts>) {
    let (date, products) = demo_products(seed, at);
    (
        date,
        DemoUsers::new(seed, date, &products).activation_counts(),
    )
}

/// The user detail report of a demo tenant at wall-clock time `at`, all users at once (the fake
/// itself computes them page by page). See the rule on the demo's user detail: every product
/// lists its `assigned` users of [`demo_products`] at the same instant; contoso (seed 42) has
/// some 4,600 users with plain names, fabrikam (seed 1337) some 5,000 with concealed ones.
pub fn demo_users(seed: u64, at: SystemTime) -> (NaiveDate, Vec<FakeUser>) {
    let (date, products) = demo_products(seed, at);
    let demo = DemoUsers::new(seed, date, &products);
    (date, (0..demo.len()).map(|g| demo.user(g)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fixed instant (2026-11-27T10:00:00Z) so the tests do not depend on today.
    fn fixed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_773_600)
    }

    #[test]
    fn demo_seeds_give_the_documented_product_sets() {
        assert_eq!(DEMO_TENANTS.len(), DEMO_SEEDS.len());
        let (_, contoso) = demo_products(DEMO_SEEDS[0], fixed_time());
        let (_, fabrikam) = demo_products(DEMO_SEEDS[1], fixed_time());
        let names =
            |p: &[FakeProduct]| p.iter().map(|p| p.product_type.clone()).collect::<Vec<_>>();
        assert_eq!(names(&contoso), DEMO_PRODUCT_TYPES);
        assert_eq!(names(&fabrikam), &DEMO_PRODUCT_TYPES[..3]);
    }

    #[test]
    fn demo_invariants_hold_over_a_month() {
        for seed in [0, 1, 2, 42, 1337, u64::MAX] {
            for hour in 0..(24 * 31) {
                let at = fixed_time() + Duration::from_secs(3600 * hour);
                let (_, products) = demo_products(seed, at);
                assert!(products.len() >= 3);
                for p in &products {
                    assert!(p.assigned >= 1, "{p:?}");
                    assert!(p.activated <= p.assigned, "{p:?}");
                    assert!(p.shared_computer_activation <= p.activated, "{p:?}");
                }
            }
        }
    }

    #[test]
    fn demo_is_deterministic_and_lags_two_days() {
        let at = fixed_time();
        assert_eq!(demo_products(42, at), demo_products(42, at));
        assert_ne!(demo_products(42, at).1, demo_products(43, at).1);
        let (date, _) = demo_products(42, at);
        assert_eq!(date, NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    }

    #[test]
    fn demo_drift_is_small_but_nonzero_over_an_hour() {
        for seed in DEMO_SEEDS {
            for start_hour in [0u64, 5, 11, 17, 23, 24 * 9 + 3] {
                let t0 = fixed_time() + Duration::from_secs(3600 * start_hour);
                let t1 = t0 + Duration::from_secs(3600);
                let (_, a) = demo_products(*seed, t0);
                let (_, b) = demo_products(*seed, t1);
                assert_ne!(a, b, "seed {seed}: nothing moved in an hour");
                for (x, y) in a.iter().zip(&b) {
                    for (u, v) in [
                        (x.assigned, y.assigned),
                        (x.activated, y.activated),
                        (x.shared_computer_activation, y.shared_computer_activation),
                    ] {
                        let diff = u.abs_diff(v) as f64;
                        assert!(
                            diff <= 2.0 + 0.06 * u.max(v) as f64,
                            "seed {seed}: {x:?} -> {y:?} moved too much in an hour"
                        );
                    }
                }
            }
        }
    }

    /// Every row of a user list, with its product type.
    fn all_rows(users: &[FakeUser]) -> impl Iterator<Item = &FakeUserProduct> {
        users.iter().flat_map(|u| &u.products)
    }

    #[test]
    fn demo_user_detail_agrees_with_the_user_counts() {
        for seed in [0, 1, 2, 7, 42, 1337] {
            let (date, products) = demo_products(seed, fixed_time());
            let (detail_date, users) = demo_users(seed, fixed_time());
            assert_eq!(detail_date, date);
            for p in &products {
                let rows: Vec<_> = all_rows(&users)
                    .filter(|r| r.product_type == p.product_type)
                    .collect();
                let activated = rows.iter().filter(|r| r.last_activated_date.is_some());
                let shared = rows.iter().filter(|r| r.activated_on_shared_computer);
                assert_eq!(rows.len() as u64, p.assigned, "seed {seed}: {p:?}");
                assert_eq!(activated.count() as u64, p.activated, "seed {seed}: {p:?}");
                assert_eq!(
                    shared.count() as u64,
                    p.shared_computer_activation,
                    "seed {seed}: {p:?}"
                );
            }
            // Each user appears once, with one main licence and maybe add-ons.
            let mut upns: Vec<_> = users.iter().map(|u| &u.user_principal_name).collect();
            upns.sort();
            upns.dedup();
            assert_eq!(upns.len(), users.len(), "seed {seed}");
            assert!(users.iter().all(|u| !u.products.is_empty()));
            // The activation counts are the device totals of the same rows.
            let (_, counts) = demo_activation_counts(seed, fixed_time());
            assert_eq!(counts.len(), products.len());
            for c in &counts {
                let rows = || all_rows(&users).filter(|r| r.product_type == c.product_type);
                assert_eq!(c.windows, rows().map(|r| r.windows).sum::<u64>());
                assert_eq!(c.mac, rows().map(|r| r.mac).sum::<u64>());
                assert_eq!(c.ios, rows().map(|r| r.ios).sum::<u64>());
                assert_eq!(c.android, rows().map(|r| r.android).sum::<u64>());
                assert_eq!(
                    c.windows10_mobile,
                    rows().map(|r| r.windows10_mobile).sum::<u64>()
                );
            }
        }
    }

    #[test]
    fn demo_user_detail_is_realistic() {
        let (date, users) = demo_users(DEMO_SEEDS[0], fixed_time());
        assert!((2_000..=6_000).contains(&users.len()), "{}", users.len());
        let rows: Vec<_> = all_rows(&users).collect();
        let activated: Vec<_> = rows
            .iter()
            .filter(|r| r.last_activated_date.is_some())
            .collect();
        let at_limit = activated.iter().filter(|r| r.computers() >= 5).count();
        let never = rows.len() - activated.len();
        let shared = rows
            .iter()
            .filter(|r| r.activated_on_shared_computer)
            .count();
        let macs = activated.iter().filter(|r| r.mac > 0).count();
        let mobile_only = activated
            .iter()
            .filter(|r| r.computers() == 0 && r.ios + r.android > 0)
            .count();
        assert!(at_limit * 20 > activated.len(), "{at_limit} at the limit");
        assert!(at_limit * 8 < activated.len(), "{at_limit} at the limit");
        assert!(never > 100 && shared > 100 && macs > 100 && mobile_only > 10);
        assert!(activated.iter().all(|r| r.computers() <= 5));
        assert!(rows.iter().all(|r| r.last_activated_date.is_some()
            || *r == &FakeUserProduct::new(r.product_type.clone())));
        // Last activations spread over a year before the refresh date.
        let ages: Vec<i64> = activated
            .iter()
            .map(|r| (date - r.last_activated_date.unwrap()).num_days())
            .collect();
        assert!(ages.iter().all(|&a| (0..365).contains(&a)));
        for (days, at_least) in [(30, 0.3), (90, 0.1), (180, 0.03)] {
            let older = ages.iter().filter(|&&a| a > days).count() as f64;
            assert!(older > at_least * ages.len() as f64, "{days} days: {older}");
        }
        assert!(ages.iter().filter(|&&a| a <= 7).count() > 50);
        // Plain names for contoso, with commas now and then.
        assert_eq!(users[42].user_principal_name, "user0042@contoso.example");
        assert!(users.iter().any(|u| u.display_name.contains(", ")));
        // Concealed names for fabrikam.
        let (_, fabrikam) = demo_users(DEMO_SEEDS[1], fixed_time());
        let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(fabrikam
            .iter()
            .all(|u| hex32(&u.user_principal_name) && hex32(&u.display_name)));
        assert_ne!(fabrikam[0].user_principal_name, fabrikam[0].display_name);
    }

    #[test]
    fn demo_user_detail_is_deterministic_and_drifts_slowly() {
        let at = fixed_time();
        assert_eq!(demo_users(42, at), demo_users(42, at));
        assert_eq!(
            demo_activation_counts(42, at),
            demo_activation_counts(42, at)
        );
        let (_, a) = demo_activation_counts(42, at);
        let (_, b) = demo_activation_counts(42, at + Duration::from_secs(3600));
        let (_, c) = demo_activation_counts(42, at + Duration::from_secs(14 * 86_400));
        assert_ne!(a, b, "nothing moved in an hour");
        assert_ne!(a, c);
        for (x, y) in a.iter().zip(&b) {
            assert!(x.windows.abs_diff(y.windows) as f64 <= 5.0 + 0.1 * x.windows as f64);
        }
        // A user's last activation date moves with the days, not within one.
        let (_, u0) = demo_users(42, at);
        let (_, u1) = demo_users(42, at + Duration::from_secs(60));
        assert_eq!(u0, u1, "a minute later, same day: same users");
    }

    #[test]
    fn demo_users_by_index_match_the_full_listing() {
        let (date, products) = demo_products(42, fixed_time());
        let demo = DemoUsers::new(42, date, &products);
        let (_, users) = demo_users(42, fixed_time());
        assert_eq!(demo.len(), users.len());
        for g in [0, 1, 17, demo.len() / 2, demo.len() - 1] {
            assert_eq!(demo.user(g), users[g]);
        }
    }
}
