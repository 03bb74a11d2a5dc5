//! The command side of a replicated region (DESIGN.md section 12): a loop of following and
//! leading. A node follows the stream into its log until it holds the region's lease; then it
//! catches up to the stream's end and starts the writer (every group published to the stream
//! before the local log), the command endpoints and the roles that send commands; it leads until
//! its lease is lost, the stream fences it, or the process stops, and then follows again.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ims_domain::RegionId;
use ims_log::{EventLog, Replicate};
use ims_replication::{Lease, ReplicatedLog, ReplicationError, LEASE_RENEW_EVERY, LEASE_TTL};
use ims_writer::WriterFailed;
use tokio::sync::watch;

use crate::runtime::{start_region_commands, stopped, Config, Started, Stores};

/// `--replication jetstream` and its settings.
#[derive(Clone, Debug)]
pub struct Replication {
    /// Copies JetStream keeps of the stream and the lease bucket (`--replicas`).
    pub replicas: usize,
    /// `--standby`: start by following, and let a lease-holding leader keep the lead.
    pub standby: bool,
    /// This node's name in the lease (`--node-id`).
    pub node: String,
}

/// How often a follower tries to take a lapsed lease.
const LEASE_TRY_EVERY: Duration = Duration::from_millis(500);

/// How long a follower waits before following again after the stream could not be read.
const FOLLOW_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a node stopped leading.
enum Ended {
    /// The process is stopping.
    Stopped,
    /// Fenced, the lease lost or the outcome of a group unknown: follow again.
    SteppedDown(String),
}

/// Follows and leads `region` until the process stops.
pub(crate) async fn lead_or_follow(
    config: Config,
    region: RegionId,
    log: EventLog,
    stores: Stores,
    client: async_nats::Client,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = config
        .replication
        .clone()
        .expect("lead_or_follow runs with replication on");
    let Some((replicated, mut lease)) =
        open_replication(&client, &config, &region, &settings, stop.clone()).await?
    else {
        return Ok(());
    };
    if matches!(config.store, ims_store::StoreLocation::Local) {
        tracing::warn!(%region, "--replication with --store local: image files stay on the disk of the node that imported them, so another node that takes the lead will not have them; give every node the same --store s3://...");
    }
    let leading = metrics::gauge!("ims_replication_leader", "region" => region.to_string());
    let mut hold_back = settings.standby;
    loop {
        leading.set(0.0);
        let wait = hold_back.then_some(LEASE_TTL);
        hold_back = false;
        if !follow_until_leading(&replicated, &log, &mut lease, wait, stop.clone()).await? {
            return Ok(());
        }
        let expected_last = match replicated.catch_up(&log).await {
            Ok(last) => last,
            Err(error @ ReplicationError::Nats { .. }) => {
                tracing::warn!(%region, %error, "catching up failed; following again");
                lease.release().await;
                continue;
            }
            Err(error) => return Err(error).context(format!("catching up region {region}")),
        };
        tracing::info!(%region, node = lease.node(), head = log.head_position(), stream_sequence = expected_last, "leading: the log is caught up with the stream");
        leading.set(1.0);
        let ended = lead(
            &config,
            &region,
            &log,
            &stores,
            &client,
            &replicated,
            &mut lease,
            expected_last,
            stop.clone(),
            &leading,
        )
        .await?;
        lease.release().await;
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::SteppedDown(why) => {
                tracing::warn!(%region, node = lease.node(), why, "no longer leading; following");
            }
        }
    }
}

/// How long a node retries opening the stream and the lease bucket: a JetStream cluster that
/// starts with imsd elects its leaders meanwhile.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(30);

/// The region's replicated log and lease, retried while JetStream is not ready yet (`None`: the
/// process stopped meanwhile).
async fn open_replication(
    client: &async_nats::Client,
    config: &Config,
    region: &RegionId,
    settings: &Replication,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(ReplicatedLog, Lease)>> {
    let started = Instant::now();
    loop {
        let opened = async {
            let replicated =
                ReplicatedLog::open(client, &config.subjects, region, settings.replicas).await?;
            let lease =
                Lease::open(client, region.as_str(), &settings.node, settings.replicas).await?;
            Ok::<_, ReplicationError>((replicated, lease))
        };
        match opened.await {
            Ok(opened) => return Ok(Some(opened)),
            Err(error) if started.elapsed() < OPEN_RETRY_FOR => {
                tracing::warn!(%region, %error, "JetStream is not ready; trying again");
            }
            Err(error) => {
                return Err(error).context(format!(
                    "opening the replicated log and lease of region {region} (is JetStream \
                     enabled for the IMS account? see `imsd nats-config --jetstream-dir`)"
                ))
            }
        }
        tokio::select! {
            _ = stopped(stop.clone()) => return Ok(None),
            _ = tokio::time::sleep(FOLLOW_RETRY_AFTER) => {}
        }
    }
}

/// Follows the stream into `log` until this node takes the lease (`true`) or the process stops
/// (`false`). With `wait`, it first only follows that long, so that a leader renewing its lease
/// keeps it.
async fn follow_until_leading(
    replicated: &ReplicatedLog,
    log: &EventLog,
    lease: &mut Lease,
    wait: Option<Duration>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let (follow_stop_tx, follow_stop_rx) = watch::channel(false);
    let following = tokio::spawn(follow(replicated.clone(), log.clone(), follow_stop_rx));
    let mut tries = tokio::time::interval(LEASE_TRY_EVERY);
    let not_before = Instant::now() + wait.unwrap_or_default();
    let taken = loop {
        tokio::select! {
            _ = stopped(stop.clone()) => break false,
            _ = tries.tick() => {
                if Instant::now() < not_before {
                    continue;
                }
                match lease.try_acquire().await {
                    Ok(true) => break true,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "trying the lease failed"),
                }
            }
        }
    };
    let _ = follow_stop_tx.send(true);
    following.await.context("the follower panicked")??;
    Ok(taken)
}

/// Follows the stream into `log` until `stop`, again after each failure to read it; a group
/// that does not continue the log stops the process.
async fn follow(
    replicated: ReplicatedLog,
    log: EventLog,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        match replicated.follow(&log, None, stopped(stop.clone())).await {
            Ok(_) => return Ok(()),
            Err(ReplicationError::Nats { doing, error }) => {
                tracing::warn!(%error, "{doing} failed; following again in a moment");
                tokio::select! {
                    _ = stopped(stop.clone()) => return Ok(()),
                    _ = tokio::time::sleep(FOLLOW_RETRY_AFTER) => {}
                }
            }
            Err(error) => {
                return Err(error).context(format!("following stream {}", replicated.stream()))
            }
        }
    }
}

/// What the command side of a region needs from its lease while this node leads it.
pub(crate) struct Leading {
    /// Each sealed group goes to the stream before the log.
    pub replicate: Replicate,
    /// The endpoints answer nothing once it passes.
    pub lease: ims_bus::LeaseDeadline,
}

/// Runs the command side of `region` as its leader until the process stops or it steps down.
#[allow(clippy::too_many_arguments)]
async fn lead(
    config: &Config,
    region: &RegionId,
    log: &EventLog,
    stores: &Stores,
    client: &async_nats::Client,
    replicated: &ReplicatedLog,
    lease: &mut Lease,
    expected_last: u64,
    stop: watch::Receiver<bool>,
    leading: &metrics::Gauge,
) -> anyhow::Result<Ended> {
    // Renewed once the log has caught up, which may have taken a good part of the lease's TTL:
    // the endpoints answer only while the renewed lease lasts.
    if let Some(lost) = renew(lease, "while catching up").await {
        return Ok(lost);
    }
    let (side_stop_tx, side_stop_rx) = watch::channel(false);
    let mut side = Started {
        client: client.clone(),
        tasks: tokio::task::JoinSet::new(),
        stop_rx: side_stop_rx,
    };
    let replicate = replicator(replicated.clone(), expected_last);
    let replicated_side = Leading {
        replicate,
        lease: lease.deadline(),
    };
    start_region_commands(
        config,
        region,
        log,
        stores,
        &mut side,
        Some(replicated_side),
    )?;
    let mut renewals = tokio::time::interval_at(
        tokio::time::Instant::now() + LEASE_RENEW_EVERY,
        LEASE_RENEW_EVERY,
    );
    let ended = loop {
        tokio::select! {
            _ = stopped(stop.clone()) => break Ended::Stopped,
            _ = renewals.tick() => {
                // Not renewed within a TTL (a stalled connection, a paused process): another
                // node may lead by now, whatever the bucket answers next.
                if !lease.deadline().held() {
                    break Ended::SteppedDown(format!("the lease was not renewed within {LEASE_TTL:?}"));
                }
                if let Some(lost) = renew(lease, "while leading").await {
                    break lost;
                }
            }
            Some(joined) = side.tasks.join_next() => match joined {
                Ok(Err(error)) if stepped_down(&error) => break Ended::SteppedDown(error.to_string()),
                Ok(Err(error)) => {
                    stop_side(side, side_stop_tx).await;
                    return Err(error);
                }
                Ok(Ok(())) => {
                    stop_side(side, side_stop_tx).await;
                    anyhow::bail!("a command role of region {region} stopped by itself");
                }
                Err(panic) => {
                    stop_side(side, side_stop_tx).await;
                    anyhow::bail!("a command role of region {region} panicked: {panic}");
                }
            },
        }
    };
    // No longer the writer from here on, even while the roles wind down.
    leading.set(0.0);
    stop_side(side, side_stop_tx).await;
    Ok(ended)
}

/// Renews `lease`; `Some` when another node holds it now. A failed renewal is tried again at
/// the next tick: the lease's deadline, not one failure, decides when this node stops.
async fn renew(lease: &mut Lease, when: &str) -> Option<Ended> {
    match lease.renew().await {
        Ok(true) => None,
        Ok(false) => Some(Ended::SteppedDown(format!("the lease was lost {when}"))),
        Err(error) => {
            tracing::warn!(%error, "renewing the lease failed; trying again");
            None
        }
    }
}

/// The writer's replication: each group published with the stream's expected last sequence,
/// which moves on with every ack.
fn replicator(replicated: ReplicatedLog, mut expected_last: u64) -> Replicate {
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |record| {
        // The writer's own thread, outside the runtime: blocking on the ack is what it is for.
        let sequence = runtime.block_on(replicated.publish(record, expected_last))?;
        expected_last = sequence;
        Ok(sequence)
    })
}

fn stepped_down(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<WriterFailed>()
        .is_some_and(WriterFailed::stepped_down)
}

/// Stops the command side and waits for its roles; the writer answers what it has queued.
async fn stop_side(mut side: Started, stop: watch::Sender<bool>) {
    let _ = stop.send(true);
    while let Some(joined) = side.tasks.join_next().await {
        match joined {
            Ok(Err(error)) if !stepped_down(&error) => {
                tracing::warn!("a command role ended with an error while stepping down: {error:#}")
            }
            Err(panic) => tracing::warn!("a command role panicked while stepping down: {panic}"),
            _ => {}
        }
    }
}
