//! The man page and the shell completions, rendered from the clap definitions ([`Cli`]) so they
//! always say what `--help` says. The hidden subcommands `man` and `completion SHELL` print
//! them; scripts/release packages their output (tests/ship.rs compares the two, and both with
//! `--help`).
//!
//! The man page is clap_mangen's (name, synopsis, description, options with their environment
//! variables and defaults, commands), plus the sections `--help` has no room for: exit status,
//! signals, the environment variables that are not flags, files, see also.

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{bold, italic, roman, Inline, Roff};

use crate::build_info::{BUILD_DATE, VERSION};
use crate::config::Cli;

/// The binary's name: the man page's title and the command the completions complete.
pub const NAME: &str = "office365-activations-exporter";

/// The man page (section 1), as roff.
pub fn man_page() -> Vec<u8> {
    let man = clap_mangen::Man::new(Cli::command())
        .section("1")
        .date(man_date())
        .source(VERSION)
        .manual("User Commands");
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render(&mut page);
    let page = String::from_utf8_lossy(&page).into_owned();
    // The extra sections go before VERSION. Both renders start with the same two-line preamble
    // (which defines the apostrophe string), needed once.
    let extra = extra_sections().render();
    let extra = extra.splitn(3, '\n').nth(2).unwrap_or_default();
    let at = page.find("\n.SH VERSION").map_or(page.len(), |at| at + 1);
    format!("{}{extra}{}", &page[..at], &page[at..]).into_bytes()
}

/// The build date as `YYYY-MM-DD`, the man page's "last changed" date: the commit's date in
/// releases (scripts/release sets SOURCE_DATE_EPOCH), so the page is reproducible.
fn man_date() -> String {
    match (
        BUILD_DATE.get(0..4),
        BUILD_DATE.get(4..6),
        BUILD_DATE.get(6..8),
    ) {
        (Some(year), Some(month), Some(day)) => format!("{year}-{month}-{day}"),
        _ => String::new(),
    }
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), NAME, &mut out);
    out
}

/// A paragraph of plain text.
fn paragraph(roff: &mut Roff, text: impl Into<Vec<Inline>>) {
    roff.control("PP", []).text(text);
}

/// A tagged paragraph: `tag` in bold, then `text` indented.
fn item(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []).text([bold(tag)]).text([roman(text)]);
}

/// EXIT STATUS, SIGNALS, ENVIRONMENT, FILES and SEE ALSO.
fn extra_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    item(&mut roff, "0", "Stopped gracefully (SIGTERM or SIGINT); for check, every tenant's report was fetched; for healthcheck, the exporter answered.");
    item(&mut roff, "1", "A failure while running: the listen address is taken, a tenant's refresh failed in check, the health probe failed. One line on standard error says why.");
    item(&mut roff, "2", "A configuration error: a flag, variable or line of --config.file is wrong or missing. One line on standard error names it; restarting cannot help (the systemd unit does not).");

    roff.control("SH", ["SIGNALS"]);
    item(
        &mut roff,
        "SIGTERM, SIGINT",
        "Stop accepting scrapes, finish those in flight, exit 0.",
    );
    item(&mut roff, "SIGHUP", "Read --config.file again: tenants added, removed or changed, the others keep their cached reports. A file that does not validate is refused and logged; the running set stays. POST /-/reload does the same with --web.enable-lifecycle.");

    roff.control("SH", ["ENVIRONMENT"]);
    paragraph(
        &mut roff,
        [roman(
            "Besides the variables listed with their flags above (the ones Azure's SDKs read):",
        )],
    );
    item(&mut roff, "AZURE_CLIENT_SECRET", "The client secret itself (there is no flag for it, so it never shows in ps); or --auth.client-secret-file.");
    item(&mut roff, "AZURE_CLIENT_CERTIFICATE_PATH, AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "The client certificate (PEM or PKCS#12), its PKCS#12 password, and whether to send its chain (true).");
    item(
        &mut roff,
        "AZURE_FEDERATED_TOKEN_FILE",
        "Workload identity: the projected service account token, as the AKS webhook injects it.",
    );
    item(
        &mut roff,
        "IDENTITY_ENDPOINT, IDENTITY_HEADER",
        "Managed identity on App Service and Azure Functions.",
    );
    item(&mut roff, "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY", "Proxies for every outbound request (upper or lower case), unless --http.proxy is given; NO_PROXY always applies.");

    roff.control("SH", ["FILES"]);
    item(&mut roff, "/etc/office365-activations-exporter/office365-activations-exporter.env", "The Debian package's environment file of the systemd unit: the AZURE_* variables and ARGS, the flags. It holds a secret: mode 0600, owned by root.");
    item(
        &mut roff,
        "/etc/office365-activations-exporter/config.yml",
        "Several tenants, for --config.file (readable by the service's group only).",
    );
    item(
        &mut roff,
        "/usr/share/office365-activations-exporter/",
        "Prometheus recording and alerting rules (rules/) and Grafana dashboards (dashboards/).",
    );

    roff.control("SH", ["SEE ALSO"]);
    paragraph(
        &mut roff,
        [
            bold("prometheus"),
            roman("(1), "),
            bold("systemctl"),
            roman("(1). The README and the alerts' runbook:"),
        ],
    );
    // One path or address per line: too long to justify.
    roff.control("nf", [])
        .text([italic("/usr/share/doc/office365-activations-exporter/")])
        .text([roman(env!("CARGO_PKG_REPOSITORY"))])
        .control("fi", []);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_flag_and_has_the_extra_sections() {
        let page = String::from_utf8(man_page()).unwrap();
        assert!(
            page.contains("\n.TH office365-activations-exporter 1 "),
            "{page}"
        );
        for section in [
            "OPTIONS",
            "EXIT STATUS",
            "SIGNALS",
            "ENVIRONMENT",
            "FILES",
            "SEE ALSO",
            "VERSION",
        ] {
            assert!(
                page.contains(&format!(".SH \"{section}\""))
                    || page.contains(&format!(".SH {section}")),
                "no {section}"
            );
        }
        for arg in Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                // roff writes a minus as \-.
                assert!(
                    page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "--{long}"
                );
            }
        }
        assert!(
            !page.contains("completion"),
            "the hidden subcommands stay hidden"
        );
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(shell)).unwrap();
            assert!(script.contains("web.listen-address"), "{shell}");
            assert!(script.contains("healthcheck"), "{shell}");
        }
    }
}
