//! Keeping a service's long-running loops alive through outages, and
//! knowing whether they are.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::BoxError;
use crate::consume::{self, ConsumeSettings, Handler};
use crate::metrics::ConsumeMetrics;
use crate::ops::Check;
use crate::reads::{self, ReadApi};

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

/// A service's loops: each consume loop, supervised and counted for
/// readiness, and the tasks beside them (outboxes, read APIs, watchers).
/// A service is ready while every consume loop it started is consuming.
#[derive(Debug)]
pub struct Loops {
    shutdown: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    consumers: usize,
    consuming: Arc<AtomicUsize>,
}

impl Loops {
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self {
            shutdown,
            tasks: Vec::new(),
            consumers: 0,
            consuming: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The shutdown signal every loop stops at.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Runs a consume loop under supervision: `setup` makes what it needs
    /// (ensuring streams and buckets, building the handler) anew at each
    /// start, then it consumes until shutdown. It counts as consuming from
    /// then until it stops, for [`Loops::readiness`].
    pub fn consume<H, S, Fut>(
        &mut self,
        js: jetstream::Context,
        settings: ConsumeSettings,
        metrics: ConsumeMetrics,
        setup: S,
    ) where
        H: Handler,
        S: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<H, BoxError>> + Send,
    {
        self.consumers += 1;
        let consuming = self.consuming.clone();
        let shutdown = self.shutdown.clone();
        let setup = Arc::new(setup);
        let name = settings.definition.file;
        self.tasks.push(tokio::spawn(supervise(
            name,
            self.shutdown.clone(),
            move || {
                let (js, settings, metrics, setup, consuming, shutdown) = (
                    js.clone(),
                    settings.clone(),
                    metrics.clone(),
                    setup.clone(),
                    consuming.clone(),
                    shutdown.clone(),
                );
                async move {
                    let handler = Arc::new(setup().await?);
                    consuming.fetch_add(1, Ordering::Relaxed);
                    let consumed = consume::run(js, settings, handler, metrics, shutdown).await;
                    consuming.fetch_sub(1, Ordering::Relaxed);
                    consumed.map_err(BoxError::from)
                }
            },
        )));
    }

    /// Runs `task` under supervision (restarted with backoff when it fails)
    /// until shutdown.
    pub fn supervise<F, Fut, E>(&mut self, name: &'static str, task: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.tasks
            .push(tokio::spawn(supervise(name, self.shutdown.clone(), task)));
    }

    /// Serves a read API under supervision until shutdown.
    pub fn serve_reads(&mut self, client: async_nats::Client, api: ReadApi) {
        let (api, shutdown) = (Arc::new(api), self.shutdown.clone());
        self.supervise(api.name, move || {
            let (client, api, shutdown) = (client.clone(), api.clone(), shutdown.clone());
            async move { reads::serve(client, &api, shutdown).await }
        });
    }

    /// Runs `task`, which watches the shutdown signal itself.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Ready while every consume loop consumes.
    pub fn readiness(&self) -> Check {
        let (consuming, expected) = (self.consuming.clone(), self.consumers);
        Arc::new(move || match consuming.load(Ordering::Relaxed) {
            n if n == expected => Ok(()),
            n => Err(format!("{n} of {expected} consume loops running")),
        })
    }

    /// Waits for every loop to finish (after shutdown was signalled): the
    /// messages in hand are settled first.
    pub async fn finished(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
