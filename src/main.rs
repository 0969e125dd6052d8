//! The binary: parse the command line, set up logging, run until a signal.

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use office365_activations_exporter::config::{Cli, Command, Config};
use office365_activations_exporter::{app, build_info, logging, manual};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Prometheus's --version format (build_info::version_text), not clap's one line.
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayVersion => {
            print!("{}", build_info::version_text());
            return ExitCode::SUCCESS;
        }
        Err(error) => error.exit(),
    };
    match cli.command {
        Some(Command::Man) => return print_bytes(&manual::man_page()),
        Some(Command::Completion { shell }) => return print_bytes(&manual::completion(shell)),
        _ => {}
    }
    logging::init(cli.flags.log_level, cli.flags.log_format);
    if cli.command == Some(Command::Healthcheck) {
        // Needs only the listen address and the web config, not the tenants.
        return run(false, app::healthcheck(&cli.flags));
    }
    let config = match Config::resolve(&cli.flags, &|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("office365-activations-exporter: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Check) => run(true, async {
            app::check(config).await.map(|text| print!("{text}"))
        }),
        _ => {
            let flags = cli.flags;
            let resolve = move || {
                Config::resolve(&flags, &|key| std::env::var(key).ok()).map_err(|e| e.to_string())
            };
            run(true, async {
                // Before anything else, so no signal arrives between "Listening" and its handler.
                let shutdown = app::shutdown_signal()?;
                app::serve(config, resolve, shutdown).await
            })
        }
    }
}

/// Writes a generated man page or completion script to stdout.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("office365-activations-exporter: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` to completion on a tokio runtime (two worker threads, or the current thread for
/// the short healthcheck) and turns its error into one line on stderr and exit code 1.
fn run(multi_thread: bool, work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => Err(format!("cannot start the async runtime: {error}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("office365-activations-exporter: {error}");
            ExitCode::FAILURE
        }
    }
}
