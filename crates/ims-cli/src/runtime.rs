//! Starting and stopping the roles of `imsd` for a set of regions, in one process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use ims_domain::{RegionId, SharingPolicy};
use ims_log::EventLog;
use ims_wire::Subjects;
use tokio::sync::{mpsc, watch};

use std::collections::HashMap;
use std::sync::Arc;

use ims_bus::BusAuth;
use ims_http::{prometheus, serve_http, HttpState};
use ims_iam::{Authenticator, IdentityEndpoints, IdentityService};
use ims_identity::setup::{bootstrap_operator, NatsKeys};
use ims_identity::Directory;
use ims_import::{run_import_worker, ImportSources, ImportWorker};
use ims_projector::{projections_path, run_projector, serve_queries, RegionModels, SnapshotPolicy};
use ims_saga::{run_copy_saga, CopySaga};
use ims_scheduler::{run_scheduler, Scheduler};
use ims_store::{ImageStore, StoreLocation};
use ims_writer::{publish_events, serve_commands, spawn_replicated_writer, PUBLISH_QUEUE_MAX};

use crate::replicated::Leading;
pub use crate::replicated::Replication;

/// Which parts of the service this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub command: bool,
    pub project: bool,
    pub http: bool,
    /// The identity role: the auth callout and `ims.v1.iam.*`. One process of a deployment runs
    /// it, since it owns `<data-dir>/iam/log`.
    pub identity: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        command: true,
        project: true,
        http: true,
        identity: true,
    };
}

/// Everything `imsd` is configured with (DESIGN.md section 9).
#[derive(Clone, Debug)]
pub struct Config {
    pub nats_url: String,
    pub data_dir: PathBuf,
    pub regions: Vec<RegionId>,
    pub http_addr: SocketAddr,
    pub subjects: Subjects,
    pub roles: Roles,
    pub policy: SharingPolicy,
    /// `--insecure-no-auth`: no credentials anywhere. For experiments only.
    pub insecure_no_auth: bool,
    /// Where image sources may be imported from: `--import-root` for `file://` URLs (none: no
    /// file imports) and `--web-download-allow` for `http(s)://` ones.
    pub import_sources: ImportSources,
    /// Where image files are kept (`--store`).
    pub store: StoreLocation,
    /// Every how many events each projector snapshots its read models (`--snapshot-every`; 0:
    /// never), for audits as of a past position.
    pub snapshot_every: u64,
    /// `--replication jetstream`: the command side leads or follows each region's replicated
    /// log (DESIGN.md section 12). `None`: this process's log is the only copy.
    pub replication: Option<Replication>,
}

/// How often `--insecure-no-auth` repeats its warning.
const INSECURE_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What a process needs to prove who it is and check others: the service's NATS keys, and the
/// identity directory when the identity role runs here.
#[derive(Debug)]
struct Security {
    keys: Arc<NatsKeys>,
    directory: Option<Directory>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Prepares a data dir's identity: its NATS keys, and (for the identity role) the identity log.
/// Also what `imsd nats-config` runs first.
pub fn prepare_identity(
    data_dir: &std::path::Path,
    identity_role: bool,
) -> anyhow::Result<(NatsKeys, Option<Directory>)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let keys = NatsKeys::load_or_create(data_dir)
        .with_context(|| format!("loading the NATS keys under {}", data_dir.display()))?;
    if !identity_role {
        return Ok((keys, None));
    }
    let directory = Directory::open(data_dir)
        .with_context(|| format!("opening the identity log under {}", data_dir.display()))?;
    Ok((keys, Some(directory)))
}

/// The log directory of `region` under `data_dir`.
pub fn log_path(data_dir: &std::path::Path, region: &RegionId) -> PathBuf {
    data_dir.join(region.as_str()).join("log")
}

/// Each region's image store.
pub(crate) type Stores = Arc<HashMap<RegionId, ImageStore>>;

/// The roles started so far: their tasks, the stop flag they watch, and the service's client.
pub(crate) struct Started {
    pub(crate) client: async_nats::Client,
    pub(crate) tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    pub(crate) stop_rx: watch::Receiver<bool>,
}

impl Started {
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        stopped(self.stop_rx.clone())
    }

    /// Runs `role` among the others; its error, typed by its crate, stops the process.
    fn spawn<E>(&mut self, role: impl Future<Output = Result<(), E>> + Send + 'static)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.tasks
            .spawn(async move { role.await.map_err(anyhow::Error::new) });
    }
}

/// Runs the configured roles until `shutdown` completes; then stops taking commands, answers and
/// flushes what is queued, drains NATS and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if config.roles.http {
        prometheus(); // installed before the first metric is recorded
    }
    let security = if config.insecure_no_auth {
        tracing::warn!("--insecure-no-auth: NO AUTHENTICATION. Any client can act and read as any tenant or the operator. Never use this outside an experiment.");
        None
    } else {
        let (keys, directory) = prepare_identity(&config.data_dir, config.roles.identity)?;
        Some(Security {
            keys: Arc::new(keys),
            directory,
        })
    };
    let service_auth = match &security {
        Some(security) => BusAuth::Nkey(security.keys.service.seed()?),
        None => BusAuth::None,
    };
    let client = ims_bus::connect(&config.nats_url, "imsd", &service_auth).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut started = Started {
        client,
        tasks: tokio::task::JoinSet::new(),
        stop_rx,
    };
    let (logs, stores) = start_commands(&config, &mut started)?;
    let mut region_models = HashMap::new();
    for region in config.regions.iter().filter(|_| config.roles.project) {
        let models = start_region_projector(&config, region, &mut started)?;
        region_models.insert(region.clone(), models);
    }
    if config.insecure_no_auth {
        started.tasks.spawn(async {
            let mut every = tokio::time::interval(INSECURE_WARNING_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                tracing::warn!("--insecure-no-auth is still on: nobody is authenticated");
            }
        });
    }
    if let (Some(security), true) = (&security, config.roles.identity) {
        start_identity(&config, security, &mut started).await?;
    }
    if config.roles.http {
        let state = HttpState {
            regions: Arc::new(region_models),
            logs: Arc::new(logs),
            stores,
            client: Some(started.client.clone()),
            subjects: config.subjects.clone(),
            authenticator: authenticator(&config, security.as_ref(), &started.client),
        };
        let stop = started.stopped();
        started.spawn(serve_http(config.http_addr, state, stop));
    }
    run_until_stopped(started, stop_tx, shutdown).await
}

/// Opens each region's image store and log, and starts its command side: at once, or with
/// replication, whenever this node leads the region. Returns the logs and stores, which the HTTP
/// role reads.
fn start_commands(
    config: &Config,
    started: &mut Started,
) -> anyhow::Result<(HashMap<RegionId, EventLog>, Stores)> {
    let mut logs = HashMap::new();
    let mut stores = HashMap::new();
    // Every store first: a copy between two regions of this process moves the bytes.
    for region in config.regions.iter().filter(|_| config.roles.command) {
        let store = ImageStore::open(&config.store, &config.data_dir, region)
            .with_context(|| format!("opening the image store of region {region}"))?;
        stores.insert(region.clone(), store);
    }
    let stores = Arc::new(stores);
    for region in config.regions.iter().filter(|_| config.roles.command) {
        let log = open_region_log(config, region)?;
        match &config.replication {
            None => start_region_commands(config, region, &log, &stores, started, None)?,
            Some(_) => {
                let leading = crate::replicated::lead_or_follow(
                    config.clone(),
                    region.clone(),
                    log.clone(),
                    stores.clone(),
                    started.client.clone(),
                    started.stop_rx.clone(),
                );
                started.tasks.spawn(leading);
            }
        }
        logs.insert(region.clone(), log);
    }
    Ok((logs, stores))
}

/// Opens `region`'s log, which the command side writes and the HTTP role reads.
fn open_region_log(config: &Config, region: &RegionId) -> anyhow::Result<EventLog> {
    let path = log_path(&config.data_dir, region);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let log = EventLog::open(&path, region.as_str())
        .with_context(|| format!("opening the log of region {region} at {}", path.display()))?;
    tracing::info!(%region, path = %path.display(), head = log.head_position(), "event log open");
    Ok(log)
}

/// Starts `region`'s writer, command endpoints, event publisher, import worker, copy saga and
/// scheduler, as tasks of `started`; with `leading`, the writer replicates and the endpoints
/// answer only while the lease lasts.
pub(crate) fn start_region_commands(
    config: &Config,
    region: &RegionId,
    log: &EventLog,
    stores: &Stores,
    started: &mut Started,
    leading: Option<Leading>,
) -> anyhow::Result<()> {
    let (replicate, lease) = match leading {
        Some(Leading { replicate, lease }) => (Some(replicate), Some(lease)),
        None => (None, None),
    };
    let (published_tx, published_rx) = mpsc::channel(PUBLISH_QUEUE_MAX);
    let (writer, thread) = spawn_replicated_writer(
        region.clone(),
        log.clone(),
        config.policy.clone(),
        published_tx,
        replicate,
    );
    // The writer is a role like the others: its end, other than at shutdown, stops the
    // process (fail-stop), whether it failed a write or panicked.
    let writer_region = region.clone();
    started.tasks.spawn(async move {
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(failed))) => Err(anyhow::Error::new(failed)),
            Ok(Err(_)) | Err(_) => Err(anyhow::anyhow!(
                "the writer of region {writer_region} panicked; stopping (see the panic above)"
            )),
        }
    });
    let client = started.client.clone();
    let importer = ImportWorker::open(
        client.clone(),
        config.subjects.clone(),
        region.clone(),
        stores[region].clone(),
        config.import_sources.clone(),
        &config.data_dir.join(region.as_str()).join("import"),
    )
    .with_context(|| format!("opening the import worker of region {region}"))?
    .with_local_log(log.clone());
    let stop = started.stopped();
    started.spawn(run_import_worker(importer, stop));
    let saga = CopySaga::open(
        client.clone(),
        config.subjects.clone(),
        region.clone(),
        &config.data_dir.join(region.as_str()).join("copy-saga"),
    )
    .with_context(|| format!("opening the copy saga of region {region}"))?
    .with_stores(stores.clone(), &config.store, &config.data_dir)
    .with_local_log(log.clone());
    let stop = started.stopped();
    started.spawn(run_copy_saga(saga, stop));
    let stop = started.stopped();
    started.spawn(ims_audit::serve_audits(
        client.clone(),
        config.subjects.clone(),
        region.clone(),
        log.clone(),
        lease.clone(),
        stop,
    ));
    let scheduler = Scheduler::open(
        region.clone(),
        log.clone(),
        writer.clone(),
        &config.data_dir.join(region.as_str()).join("scheduler"),
    )
    .with_context(|| format!("opening the scheduler of region {region}"))?;
    let stop = started.stopped();
    started.spawn(run_scheduler(scheduler, stop));
    let publisher = tokio::spawn(publish_events(
        client.clone(),
        config.subjects.events(region),
        published_rx,
    ));
    let stop = started.stopped();
    let (subjects, region, served_log) = (config.subjects.clone(), region.clone(), log.clone());
    started.spawn(async move {
        let served =
            serve_commands(client, subjects, region, writer, served_log, lease, stop).await;
        // The endpoints are closed; the writer ends once the last queued command is
        // answered, and the publisher once the writer's last events are sent.
        let _ = publisher.await;
        served
    });
    Ok(())
}

/// Opens `region`'s read models and starts its projector and query endpoints.
fn start_region_projector(
    config: &Config,
    region: &RegionId,
    started: &mut Started,
) -> anyhow::Result<Arc<RegionModels>> {
    let path = projections_path(&config.data_dir, region);
    let models = RegionModels::open(&path, region.clone(), &config.policy).with_context(|| {
        format!(
            "opening the read models of region {region} at {}",
            path.display()
        )
    })?;
    models.set_snapshot_policy(SnapshotPolicy::new(
        config.snapshot_every,
        ims_projector::SNAPSHOT_MIN_GAP,
    ));
    let models = Arc::new(models);
    let (client, subjects) = (started.client.clone(), config.subjects.clone());
    let stop = started.stopped();
    started.spawn(run_projector(
        client.clone(),
        subjects.clone(),
        models.clone(),
        stop,
    ));
    let stop = started.stopped();
    started.spawn(ims_audit::serve_as_of(
        client.clone(),
        subjects.clone(),
        region.clone(),
        ims_projector::snapshots_path(&path),
        stop,
    ));
    let stop = started.stopped();
    started.spawn(serve_queries(client, subjects, models.clone(), stop));
    Ok(models)
}

/// Starts the auth callout and `ims.v1.iam.*`, then writes the bootstrap operator token.
async fn start_identity(
    config: &Config,
    security: &Security,
    started: &mut Started,
) -> anyhow::Result<()> {
    let directory = security
        .directory
        .clone()
        .expect("the identity role opened the directory");
    let system = ims_bus::connect(
        &config.nats_url,
        "imsd-system",
        &BusAuth::Nkey(security.keys.system.seed()?),
    )
    .await?;
    let identity = Arc::new(IdentityService::new(
        directory.clone(),
        security.keys.clone(),
        config.subjects.clone(),
    ));
    let endpoints =
        IdentityEndpoints::start(started.client.clone(), Some(system), identity).await?;
    let stop = started.stopped();
    started.spawn(endpoints.serve(stop));
    // Written only now that the callout answers: whoever reads the token can connect at once.
    if let Some(path) = bootstrap_operator(&config.data_dir, &directory, now_ms())
        .context("issuing the bootstrap operator credential")?
    {
        tracing::info!(path = %path.display(), "bootstrap operator token written (mode 0600); imsctl reads it from there");
    }
    Ok(())
}

/// How the HTTP role checks bearer tokens: against the local directory when the identity role
/// runs here, else by asking the one that does.
fn authenticator(
    config: &Config,
    security: Option<&Security>,
    client: &async_nats::Client,
) -> Authenticator {
    match security {
        None => Authenticator::Open,
        Some(Security {
            directory: Some(directory),
            ..
        }) => Authenticator::Local(directory.clone()),
        Some(_) => Authenticator::Remote {
            client: client.clone(),
            subject: config.subjects.iam("authenticate"),
            cache: Default::default(),
        },
    }
}

/// Runs until asked to stop, or until a role fails (a port taken, a log that will not open);
/// then raises the stop flag, waits for every role and drains NATS.
async fn run_until_stopped(
    mut started: Started,
    stop_tx: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        Some(joined) = started.tasks.join_next() => {
            result = match joined {
                Ok(Ok(())) => Err(anyhow::anyhow!("a role of imsd stopped by itself")),
                Ok(Err(error)) => Err(error),
                Err(panic) => Err(anyhow::anyhow!("a role of imsd panicked: {panic}")),
            };
        }
    }
    tracing::info!("shutting down: no new commands, finishing the batch in hand");
    let _ = stop_tx.send(true);
    while let Some(joined) = started.tasks.join_next().await {
        if let (Ok(Err(error)), Ok(())) = (joined, &result) {
            result = Err(error);
        }
    }
    started.client.drain().await.ok();
    result
}

/// Completes when the stop flag is raised.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
