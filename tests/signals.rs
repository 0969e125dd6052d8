//! The shutdown signal handlers are installed when `shutdown_signal()` is called, not when its
//! future is first polled: a SIGTERM or Ctrl-C that arrives between the "Listening" line and the
//! server's first poll must stop the exporter cleanly, not kill it with the signal's default
//! action. Its own test binary, because the handlers stay installed for the whole process.

#![cfg(unix)]

use std::time::Duration;

use office365_activations_exporter::app::shutdown_signal;

/// Sends `signal` to this test process and waits until `kill` has delivered it.
fn signal_self(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_signal_before_the_first_poll_is_caught_not_fatal() {
    for signal in ["TERM", "INT"] {
        let shutdown = shutdown_signal().expect("handlers install");
        // Delivered before `shutdown` is polled: without eager handlers this process dies here.
        signal_self(signal);
        tokio::time::timeout(Duration::from_secs(30), shutdown)
            .await
            .unwrap_or_else(|_| panic!("the shutdown future completes after SIG{signal}"));
    }
}

#[tokio::test]
async fn a_sighup_before_the_first_poll_reloads_not_kills() {
    let (sender, mut reloads) = tokio::sync::mpsc::unbounded_channel();
    let reloader: office365_activations_exporter::server::Reloader =
        std::sync::Arc::new(move || {
            sender.send(()).unwrap();
            Ok("reloaded".to_owned())
        });
    let task = office365_activations_exporter::app::reload_on_sighup(reloader).unwrap();
    // The spawned task has not run yet (one thread, no await so far).
    signal_self("HUP");
    tokio::time::timeout(Duration::from_secs(30), reloads.recv())
        .await
        .expect("the reloader runs after SIGHUP")
        .unwrap();
    task.abort();
}
