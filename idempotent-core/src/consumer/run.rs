//! The consumer's loop: receive while a slot is free, process each message on its own task,
//! and on shutdown let in-flight messages finish (or release and requeue them).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};

use super::Consumer;
use super::broker::{Broker, BrokerError};
use super::process::process;
use super::stats::StatsSnapshot;

/// How long cancelled messages may take to release their claims and requeue themselves
/// after the grace period, before their tasks are aborted (the broker then redelivers them
/// when the connection closes, and their leases free the keys).
const CANCEL_BOUND: Duration = Duration::from_secs(10);

impl<B: Broker> Consumer<B> {
    pub(super) async fn run_loop(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StatsSnapshot, BrokerError> {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let (cancel, cancelled) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        let mut ended = Ok(());
        let mut quiet_since = Instant::now();
        loop {
            while let Some(done) = tasks.try_join_next() {
                report(done);
            }
            // Backpressure: no slot, no receive.
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let idle_at = self.idle.map(|quiet| quiet_since + quiet);
            let idle = async {
                match idle_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = self.broker.receive() => match received {
                    Ok(Some(delivery)) => {
                        quiet_since = Instant::now();
                        let shared = Arc::clone(&self.shared);
                        let mut cancelled = cancelled.clone();
                        tasks.spawn(async move {
                            process(&shared, &delivery, &mut cancelled).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(error) => {
                        ended = Err(error);
                        break;
                    }
                },
                () = idle => {
                    while let Some(done) = tasks.try_join_next() {
                        report(done);
                    }
                    if tasks.is_empty() {
                        break;
                    }
                    quiet_since = Instant::now();
                }
            }
        }
        drain(&mut tasks, &cancel, self.shutdown_grace).await;
        ended.map(|()| self.shared.stats.snapshot())
    }
}

/// Waits for in-flight messages for `grace`, then cancels the rest: each drops its call
/// (releasing the claim; a transactional one rolls back) and requeues its message.
async fn drain(tasks: &mut JoinSet<()>, cancel: &watch::Sender<bool>, grace: Duration) {
    let all_done = async {
        while let Some(done) = tasks.join_next().await {
            report(done);
        }
    };
    if timeout(grace, all_done).await.is_ok() {
        return;
    }
    tracing::warn!(
        in_flight = tasks.len(),
        "shutdown grace period over: releasing and requeueing the messages still in flight"
    );
    cancel.send_replace(true);
    let cancelled = async {
        while let Some(done) = tasks.join_next().await {
            report(done);
        }
    };
    if timeout(CANCEL_BOUND, cancelled).await.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn report(done: Result<(), JoinError>) {
    if let Err(error) = done {
        if error.is_panic() {
            tracing::error!(
                "a message task panicked outside its handler; the message is left to the broker"
            );
        }
    }
}
