//! Test support for paused tokio time next to real sockets.

/// While alive, tokio's paused clock does not auto-advance: a running `spawn_blocking` task
/// inhibits it (tokio's test-util contract), so only `tokio::time::advance` moves time. Without
/// it, a runtime idle while a loopback packet is in flight jumps the clock to its next timer
/// (a connection pool's 90 s idle check, say), and expiry or throttling windows move under a test.
pub struct FrozenClock(Option<std::sync::mpsc::Sender<()>>);

impl FrozenClock {
    /// Freezes the current runtime's paused clock until dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> FrozenClock {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        FrozenClock(Some(tx))
    }
}

impl Drop for FrozenClock {
    fn drop(&mut self) {
        self.0.take();
    }
}
