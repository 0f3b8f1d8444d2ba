//! Keeping a service's long-running loops alive through outages.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs `task` until `shutdown` turns true. When it fails (the broker or the
/// database is away), logs why and runs it again after a pause growing from
/// 1 s to 30 s, so the service recovers by itself when they return.
pub async fn supervise<F, Fut, E>(
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut task: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut pause = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match task().await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(task = name, %error, retry_in = ?pause, "Stopped with an error; restarting.");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}
