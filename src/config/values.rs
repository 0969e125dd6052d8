//! Parsing and checking single values: durations, sizes, URLs, TTLs, addresses, proxies.

use super::*;

/// Parses a human duration: `90s`, `30m`, `1h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 90s, 30m or 1h: {e}"))
}

/// Parses a size: bytes, or with a KiB/MiB/GiB (or KB/MB/GB) suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 8MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "kb" | "k" => 1 << 10,
        "mib" | "mb" | "m" => 1 << 20,
        "gib" | "gb" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!("{text:?} is not a usable size")),
        Some(n) => Ok(n),
    }
}

pub(super) fn parse_url(value: &str, what: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError(format!("{what}: {value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return err(format!("{what}: {value:?} must be an https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return err(format!(
            "{what}: {value:?} must not have a query or fragment"
        ));
    }
    Ok(url)
}

pub(super) fn check_ttl(ttl: Duration, what: &str) -> Result<Duration, ConfigError> {
    if ttl < MIN_CACHE_TTL {
        return err(format!(
            "{what}: {} is under the 1m minimum: Graph allows only 14 report downloads per 10 minutes per app and tenant",
            humantime::format_duration(ttl)
        ));
    }
    Ok(ttl)
}

pub(super) fn check_api_version(version: &str, what: &str) -> Result<String, ConfigError> {
    match version {
        "v1.0" | "beta" => Ok(version.to_owned()),
        other => err(format!("{what}: {other:?} must be v1.0 or beta")),
    }
}

/// Checks that a secret file can be read now, so a typo fails at start and not at first scrape.
pub(super) fn check_secret_file(path: &Path, what: &str) -> Result<SecretSource, ConfigError> {
    let source = SecretSource::File(path.to_owned());
    source
        .read()
        .map_err(|e| ConfigError(format!("{what}: cannot read {}: {e}", path.display())))?;
    Ok(source)
}

/// Checks a `--web.sd-address`: host:port.
pub(super) fn sd_address(value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => err(format!("--web.sd-address: {value:?} must be host:port")),
    }
}

/// The address /sd advertises by default: the listen address, with the machine's hostname in
/// place of a wildcard host (which no scraper can connect to).
pub(super) fn advertised(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, ""));
    match host.trim_matches(['[', ']']) {
        "0.0.0.0" | "::" | "" => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{hostname}:{port}")
        }
        _ => listen.to_owned(),
    }
}

/// Expands Prometheus's `:port` shorthand to every IPv4 interface.
pub(super) fn listen_address(value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_owned(),
    };
    match full.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(full),
        _ => err(format!(
            "--web.listen-address: {value:?} must be host:port or :port"
        )),
    }
}

/// Parses `--http.proxy` without ever echoing its password.
pub(super) fn parse_proxy(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| {
        ConfigError(format!(
            "--http.proxy: not a URL ({e}); expected http://[user:password@]host:port"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return err("--http.proxy: expected http://[user:password@]host:port or https://...");
    }
    Ok(url)
}
