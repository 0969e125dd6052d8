//! The shutdown and reload signal handlers are installed when `shutdown_signal()` and
//! `reload_on_sighup()` are called, not when their futures are first polled: a SIGTERM, Ctrl-C or
//! SIGHUP that arrives between the "Listening" line and the server's first poll must stop (or
//! reload) the exporter, not kill it with the signal's default action.
//!
//! Each signal is tried in a fresh process (this test binary run again, with only the ignored
//! `signal_child` test): tokio's handlers, once installed, stay for the whole process, so a second
//! signal in the same process would be caught whatever the code under test did.

#![cfg(unix)]

mod common;

use std::time::Duration;

use common::send_signal;
use office365_activations_exporter::app::{reload_on_sighup, shutdown_signal};
use office365_activations_exporter::server::Reloader;

/// Names the signal the child process sends itself.
const CHILD_ENV: &str = "OFFICE365_SIGNALS_TEST_CHILD";

/// Runs `signal_child` for `signal` in a fresh process and expects it to pass, not to die.
fn in_a_fresh_process(signal: &str) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["signal_child", "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_ENV, signal)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SIG{signal} before the first poll: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child ran: {stdout}");
}

#[test]
fn sigterm_before_the_first_poll_stops_cleanly() {
    in_a_fresh_process("TERM");
}

#[test]
fn ctrl_c_before_the_first_poll_stops_cleanly() {
    in_a_fresh_process("INT");
}

#[test]
fn sighup_before_the_first_poll_reloads() {
    in_a_fresh_process("HUP");
}

/// The child of the tests above (one signal, one fresh process); does nothing on its own.
#[test]
#[ignore = "run in a fresh process by the tests above"]
fn signal_child() {
    let Ok(signal) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wait = Duration::from_secs(30);
        if signal == "HUP" {
            let (sender, mut reloads) = tokio::sync::mpsc::unbounded_channel();
            let reloader: Reloader = std::sync::Arc::new(move || {
                sender.send(()).unwrap();
                Ok("reloaded".to_owned())
            });
            let task = reload_on_sighup(reloader).unwrap();
            // The spawned task has not run yet (one thread, nothing awaited so far).
            send_signal(std::process::id(), "HUP");
            tokio::time::timeout(wait, reloads.recv())
                .await
                .expect("the reloader runs after SIGHUP")
                .unwrap();
            task.abort();
        } else {
            let shutdown = shutdown_signal().expect("handlers install");
            // Delivered before `shutdown` is polled: without eager handlers this process dies.
            send_signal(std::process::id(), &signal);
            tokio::time::timeout(wait, shutdown)
                .await
                .unwrap_or_else(|_| panic!("the shutdown future completes after SIG{signal}"));
        }
    });
}
