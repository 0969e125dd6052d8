//! The demo tenants and their slowly drifting numbers.
//!
//! `--demo` runs the exporter against a [`FakeGraph`](super::FakeGraph) started with
//! [`FakeGraphOptions::demo`](super::FakeGraphOptions::demo), with no credentials: the exporter
//! builds its configuration from [`DEMO_TENANTS`]. The report numbers of a
//! [`ReportData::Demo`](super::ReportData::Demo) tenant are a pure function of its seed and the
//! wall-clock time ([`demo_products`]), so dashboards show smooth movement (a slow trend, a daily
//! shape, a few percent within an hour) while tests can pin the values down exactly.

use std::f64::consts::TAU;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::FakeProduct;

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
}
