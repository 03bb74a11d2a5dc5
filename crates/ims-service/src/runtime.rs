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

use crate::bus::BusAuth;
use crate::command_service::{publish_events, serve_commands, PUBLISH_QUEUE_MAX};
use crate::copy_saga::{run_copy_saga, CopySaga};
use crate::http::{prometheus, serve_http, HttpState};
use crate::identity::{Authenticator, IdentityEndpoints, IdentityService};
use crate::import::{run_import_worker, ImportSources, ImportWorker};
use crate::projector::{projections_path, run_projector, RegionModels};
use crate::query_service::serve_queries;
use crate::store::{ImageStore, StoreLocation};
use crate::writer::spawn_writer;
use ims_identity::setup::{bootstrap_operator, NatsKeys};
use ims_identity::Directory;

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
    let client = crate::bus::connect(&config.nats_url, "imsd", &service_auth).await?;
    let mut logs = HashMap::new();
    let mut region_models = HashMap::new();
    let mut stores = HashMap::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Every store first: a copy between two regions of this process moves the bytes.
    for region in config.regions.iter().filter(|_| config.roles.command) {
        let store = ImageStore::open(&config.store, &config.data_dir, region)
            .with_context(|| format!("opening the image store of region {region}"))?;
        stores.insert(region.clone(), store);
    }
    let stores = Arc::new(stores);
    for region in &config.regions {
        if !config.roles.command {
            continue;
        }
        let path = log_path(&config.data_dir, region);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let log = EventLog::open(&path, region.as_str())
            .with_context(|| format!("opening the log of region {region} at {}", path.display()))?;
        tracing::info!(%region, path = %path.display(), head = log.head_position(), "event log open");
        logs.insert(region.clone(), log.clone());
        let (published_tx, published_rx) = mpsc::channel(PUBLISH_QUEUE_MAX);
        let (writer, thread) = spawn_writer(
            region.clone(),
            log.clone(),
            config.policy.clone(),
            published_tx,
        );
        // The writer is a role like the others: its end, other than at shutdown, stops the
        // process (fail-stop), whether it failed a write or panicked.
        let writer_region = region.clone();
        tasks.spawn(async move {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(failed))) => Err(anyhow::Error::new(failed)),
                Ok(Err(_)) | Err(_) => Err(anyhow::anyhow!(
                    "the writer of region {writer_region} panicked; stopping (see the panic above)"
                )),
            }
        });
        let store = stores[region].clone();
        let importer = ImportWorker::open(
            client.clone(),
            config.subjects.clone(),
            region.clone(),
            store,
            config.import_sources.clone(),
            &config.data_dir.join(region.as_str()).join("import"),
        )
        .with_context(|| format!("opening the import worker of region {region}"))?;
        tasks.spawn(run_import_worker(importer, stopped(stop_rx.clone())));
        let saga = CopySaga::open(
            client.clone(),
            config.subjects.clone(),
            region.clone(),
            &config.data_dir.join(region.as_str()).join("copy-saga"),
        )
        .with_context(|| format!("opening the copy saga of region {region}"))?
        .with_stores(stores.clone(), &config.store, &config.data_dir);
        tasks.spawn(run_copy_saga(saga, stopped(stop_rx.clone())));
        let publisher = tokio::spawn(publish_events(
            client.clone(),
            config.subjects.events(region),
            published_rx,
        ));
        let stopped = stopped(stop_rx.clone());
        let (client, subjects, region) = (client.clone(), config.subjects.clone(), region.clone());
        tasks.spawn(async move {
            let served = serve_commands(client, subjects, region, writer, log, stopped).await;
            // The endpoints are closed; the writer ends once the last queued command is
            // answered, and the publisher once the writer's last events are sent.
            let _ = publisher.await;
            served
        });
    }
    for region in config.regions.iter().filter(|_| config.roles.project) {
        let path = projections_path(&config.data_dir, region);
        let models =
            RegionModels::open(&path, region.clone(), &config.policy).with_context(|| {
                format!(
                    "opening the read models of region {region} at {}",
                    path.display()
                )
            })?;
        let models = Arc::new(models);
        region_models.insert(region.clone(), models.clone());
        let (client, subjects) = (client.clone(), config.subjects.clone());
        let stop = stopped(stop_rx.clone());
        tasks.spawn(run_projector(
            client.clone(),
            subjects.clone(),
            models.clone(),
            stop,
        ));
        tasks.spawn(serve_queries(
            client,
            subjects,
            models,
            stopped(stop_rx.clone()),
        ));
    }
    if config.insecure_no_auth {
        tasks.spawn(async {
            let mut every = tokio::time::interval(INSECURE_WARNING_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                tracing::warn!("--insecure-no-auth is still on: nobody is authenticated");
            }
        });
    }
    if let (Some(security), true) = (&security, config.roles.identity) {
        let directory = security
            .directory
            .clone()
            .expect("the identity role opened the directory");
        let system = crate::bus::connect(
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
        let endpoints = IdentityEndpoints::start(client.clone(), Some(system), identity).await?;
        tasks.spawn(endpoints.serve(stopped(stop_rx.clone())));
        // Written only now that the callout answers: whoever reads the token can connect at once.
        if let Some(path) = bootstrap_operator(&config.data_dir, &directory, now_ms())
            .context("issuing the bootstrap operator credential")?
        {
            tracing::info!(path = %path.display(), "bootstrap operator token written (mode 0600); imsctl reads it from there");
        }
    }
    if config.roles.http {
        let authenticator = match &security {
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
        };
        let state = HttpState {
            regions: Arc::new(region_models),
            logs: Arc::new(logs),
            stores,
            client: Some(client.clone()),
            subjects: config.subjects.clone(),
            authenticator,
        };
        tasks.spawn(serve_http(
            config.http_addr,
            state,
            stopped(stop_rx.clone()),
        ));
    }
    // Run until asked to stop, or until a role fails (a port taken, a log that will not open).
    let mut result = Ok(());
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        Some(joined) = tasks.join_next() => {
            result = match joined {
                Ok(Ok(())) => Err(anyhow::anyhow!("a role of imsd stopped by itself")),
                Ok(Err(error)) => Err(error),
                Err(panic) => Err(anyhow::anyhow!("a role of imsd panicked: {panic}")),
            };
        }
    }
    tracing::info!("shutting down: no new commands, finishing the batch in hand");
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        if let (Ok(Err(error)), Ok(())) = (joined, &result) {
            result = Err(error);
        }
    }
    client.drain().await.ok();
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
