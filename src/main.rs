//! The binary: parse the command line, set up logging, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use office365_activations_exporter::{app, config, logging};

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    logging::init(cli.flags.log_level, cli.flags.log_format);
    let config = match config::Config::resolve(&cli.flags, &|key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("office365-activations-exporter: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("office365-activations-exporter: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => {
                let flags = cli.flags;
                let resolve = move || {
                    config::Config::resolve(&flags, &|key| std::env::var(key).ok())
                        .map_err(|e| e.to_string())
                };
                app::serve(config, resolve, app::shutdown_signal()).await
            }
            Some(config::Command::Check) => app::check(config).await.map(|text| print!("{text}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("office365-activations-exporter: {error}");
            ExitCode::FAILURE
        }
    }
}
