//! `imsd`: runs the ims service. Thin glue: flags, logging, signals; the work is in the role crates, started by `runtime`.
//! Kept in the library so that the end-to-end tests can run the very same entry point as a child
//! process.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::runtime::{prepare_identity, run, Config, Roles};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ims_domain::{RegionId, SharingPolicy};
use ims_nats_server::NatsServer;
use ims_wire::Subjects;

/// The ims Image Management Service daemon.
///
/// Examples:
///   imsd run                                  # everything, with its own nats-server
///   imsd run --regions eu-west-0,us-east-1    # two regions in one process
///   imsd command --nats-url nats://10.0.0.5:4222 --regions us-east-1
///   imsd nats-config --data-dir ./data --listen 0.0.0.0:4222 > nats.conf
///   imsd run --replication jetstream --replicas 3 --nats-url nats://n1:4222,nats://n2:4222 \
///            --no-identity --standby     # a standby of a replicated region (deploy/cluster/)
///
/// Credentials are required from the first start: `run` writes an operator token to
/// <data-dir>/operator.token (mode 0600), which imsctl uses by default.
#[derive(Parser, Debug)]
#[command(name = "imsd", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Run every role (command writer, projectors, query endpoints, HTTP). Without --nats-url it
    /// starts its own nats-server on loopback (port 4222, or a free one) and stops it on exit.
    Run(Options),
    /// Run only the command writer of each region.
    Command(Options),
    /// Run only the projectors and NATS query endpoints.
    Project(Options),
    /// Run only the HTTP API (needs projectors in this process: use `run` or `project` too).
    Http(Options),
    /// Run only the identity role: nats-server's auth callout and the credential subjects
    /// (ims.v1.iam.*). One process of a deployment runs it; it owns <data-dir>/iam/log.
    Identity(Options),
    /// Print a complete nats-server configuration (accounts and the auth callout) for the keys
    /// of a data dir, creating them and the bootstrap operator token when missing.
    NatsConfig(NatsConfigOptions),
}

#[derive(Args, Debug)]
struct NatsConfigOptions {
    /// The data dir whose keys the configuration names (the identity role's data dir).
    #[arg(long, env = "IMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The address nats-server listens on.
    #[arg(long, default_value = "127.0.0.1:4222")]
    listen: String,
    /// Turn JetStream on (for `--replication jetstream`), with its files in this folder.
    #[arg(long)]
    jetstream_dir: Option<PathBuf>,
    /// This server's unique name (required in a JetStream cluster).
    #[arg(long)]
    server_name: Option<String>,
    /// Join a cluster of this name (with --cluster-listen and --routes).
    #[arg(long, requires_all = ["cluster_listen", "routes"])]
    cluster_name: Option<String>,
    /// Where this server listens for its cluster peers, e.g. 0.0.0.0:6222.
    #[arg(long)]
    cluster_listen: Option<String>,
    /// The peers' cluster addresses, comma-separated, e.g.
    /// nats-route://10.0.0.2:6222,nats-route://10.0.0.3:6222.
    #[arg(long, value_delimiter = ',')]
    routes: Vec<String>,
}

#[derive(Args, Debug)]
struct Options {
    /// NATS server to use; when absent, `run` starts its own on loopback.
    #[arg(long, env = "IMS_NATS_URL")]
    nats_url: Option<String>,
    /// Where the event logs and read models live, one folder per region.
    #[arg(long, env = "IMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Regions served, comma-separated.
    #[arg(
        long,
        env = "IMS_REGIONS",
        default_value = "local-1",
        value_delimiter = ','
    )]
    regions: Vec<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "IMS_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// First token of every NATS subject.
    #[arg(long, env = "IMS_SUBJECT_PREFIX", default_value = "ims")]
    subject_prefix: String,
    /// Log format on stderr.
    #[arg(long, env = "IMS_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    /// Turn authentication off on NATS and HTTP: any client may act as anyone. For
    /// experiments on a laptop only; imsd warns at start and every minute.
    #[arg(long, env = "IMS_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// The folder that images created from file:// URLs must lie under (links resolved); the
    /// import worker stores, hashes and inspects them. Without it, file:// imports fail.
    #[arg(long, env = "IMS_IMPORT_ROOT")]
    import_root: Option<PathBuf>,
    /// An address that http(s):// image sources may reach although the web-download rules
    /// refuse it (loopback, link-local, ports other than 80 and 443), e.g. a mirror on this
    /// machine. Repeat it, or separate addresses with commas. Everything else stays refused.
    #[arg(long, env = "IMS_WEB_DOWNLOAD_ALLOW", value_delimiter = ',')]
    web_download_allow: Vec<std::net::IpAddr>,
    /// Where image files are kept: `local` (under the data dir) or `s3://bucket[/prefix]`
    /// (objects `<prefix>/<region>/images/<id>`; endpoint, region and keys from the usual
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; needs a build
    /// with `--features s3`). Every process of a deployment names the same store.
    #[arg(long, env = "IMS_STORE", default_value = "local")]
    store: ims_store::StoreLocation,
    /// Every how many events each projector writes a snapshot of its read models, at most once a
    /// minute (the newest 8 are kept, under `<data-dir>/<region>/projections/snapshots`), so
    /// that `imsctl audit as-of --data-dir` starts from the nearest one instead of position 1.
    /// 0 turns them off.
    #[arg(long, env = "IMS_SNAPSHOT_EVERY", default_value_t = ims_projector::SNAPSHOT_EVERY_EVENTS)]
    snapshot_every: u64,
    /// With `run`: leave the identity role (auth callout, credentials) to another process of
    /// the deployment, as every node but one of a replicated deployment does.
    #[arg(long, env = "IMS_NO_IDENTITY")]
    no_identity: bool,
    #[command(flatten)]
    replication: ReplicationOptions,
}

/// Replicated durability and failover (DESIGN.md section 12).
#[derive(Args, Debug)]
struct ReplicationOptions {
    /// `jetstream`: every committed group of each region is also published to the JetStream
    /// stream IMS_LOG_<region>, and its replicated ack is the commit point. The region's
    /// writer is whichever node holds its lease in the bucket ims_leases; the others follow
    /// the stream into their own logs and read models, and take over when the lease lapses.
    /// `none`: this node's disk holds the only copy.
    #[arg(long, env = "IMS_REPLICATION", default_value = "none", value_parser = ["none", "jetstream"])]
    replication: String,
    /// Copies JetStream keeps of each stream and of the lease bucket: 1 on a single
    /// nats-server, 3 on a cluster of three (survives one server lost).
    #[arg(long, env = "IMS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// Start as a standby: follow the stream and serve queries, and take over commands only
    /// when the leader's lease lapses (implies --replication jetstream).
    #[arg(long, env = "IMS_STANDBY")]
    standby: bool,
    /// This node's name in the lease (default: a name made of the host name and process id).
    #[arg(long, env = "IMS_NODE_ID")]
    node_id: Option<String>,
}

impl ReplicationOptions {
    fn settings(&self) -> Option<crate::runtime::Replication> {
        if self.replication == "none" && !self.standby {
            return None;
        }
        let node = self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "node".to_owned());
            format!("{host}-{}", std::process::id())
        });
        Some(crate::runtime::Replication {
            replicas: usize::from(self.replicas),
            standby: self.standby,
            node,
        })
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

/// The whole `imsd` program: parses the command line, serves, returns the exit code.
pub fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsd: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let only = Roles {
        command: false,
        project: false,
        http: false,
        identity: false,
    };
    let (options, roles, embedded_allowed) = match cli.role {
        Role::Run(o) => (o, Roles::ALL, true),
        Role::Command(o) => (
            o,
            Roles {
                command: true,
                ..only
            },
            false,
        ),
        Role::Project(o) => (
            o,
            Roles {
                project: true,
                ..only
            },
            false,
        ),
        Role::Http(o) => (
            o,
            Roles {
                project: true,
                http: true,
                ..only
            },
            false,
        ),
        Role::Identity(o) => (
            o,
            Roles {
                identity: true,
                ..only
            },
            false,
        ),
        Role::NatsConfig(o) => return print_nats_config(o),
    };
    let roles = Roles {
        identity: roles.identity && !options.no_identity,
        ..roles
    };
    init_logging(&options.log_format);
    match serve(options, roles, embedded_allowed).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("imsd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options, roles: Roles, embedded_allowed: bool) -> anyhow::Result<()> {
    let regions = options
        .regions
        .iter()
        .map(|r| RegionId::parse(r.trim()).map_err(|e| anyhow::anyhow!("--regions: {}", e.message)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let replication = options.replication.settings();
    let mut embedded = None;
    let nats_url = match (options.nats_url, embedded_allowed) {
        (Some(url), _) => url,
        (None, true) if options.insecure_no_auth => {
            let server = NatsServer::start(None).context("starting the embedded nats-server")?;
            let url = server.url();
            embedded = Some(server);
            url
        }
        (None, true) => {
            let (keys, _) = prepare_identity(&options.data_dir, true)?;
            let config_path = options.data_dir.join("nats").join("nats-server.conf");
            // Replication on one embedded server: JetStream with its files in the data dir.
            let extras = ims_identity::setup::ServerExtras {
                jetstream_dir: replication
                    .is_some()
                    .then(|| options.data_dir.join("nats").join("jetstream")),
                ..Default::default()
            };
            let server = NatsServer::start_with_config(None, &config_path, |listen| {
                keys.server_config_with(listen, &extras)
            })
            .context("starting the embedded nats-server")?;
            let url = server.url();
            embedded = Some(server);
            url
        }
        (None, false) => "nats://127.0.0.1:4222".to_owned(),
    };
    if embedded.is_some() {
        // imsctl run from the same folder finds the server here, whatever port it got.
        let url_file = options.data_dir.join("nats.url");
        std::fs::write(&url_file, format!("{nats_url}\n"))
            .with_context(|| format!("writing {}", url_file.display()))?;
        tracing::info!(url = %nats_url, "started embedded nats-server; imsctl finds it through {}", url_file.display());
    }
    let config = Config {
        nats_url,
        data_dir: options.data_dir,
        regions,
        http_addr: options.http_addr,
        subjects: Subjects::new(options.subject_prefix),
        roles,
        policy: SharingPolicy::default(),
        insecure_no_auth: options.insecure_no_auth,
        import_sources: ims_import::ImportSources {
            root: options.import_root,
            web: ims_fetch::web_download::WebDownloadPolicy {
                allowed: options.web_download_allow,
            },
        },
        store: options.store,
        snapshot_every: options.snapshot_every,
        replication,
    };
    let data_dir = config.data_dir.clone();
    let result = run(config, shutdown_signal()).await;
    if embedded.take().is_some() {
        // The server stops with us: its URL must not outlive it.
        let _ = std::fs::remove_file(data_dir.join("nats.url"));
    }
    result
}

fn print_nats_config(options: NatsConfigOptions) -> std::process::ExitCode {
    match prepare_identity(&options.data_dir, true) {
        Ok((keys, _)) => {
            let extras = ims_identity::setup::ServerExtras {
                server_name: options.server_name,
                jetstream_dir: options.jetstream_dir,
                cluster: options
                    .cluster_name
                    .map(|name| ims_identity::setup::ClusterRoutes {
                        name,
                        listen: options.cluster_listen.unwrap_or_default(),
                        routes: options.routes,
                    }),
            };
            print!("{}", keys.server_config_with(&options.listen, &extras));
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("imsd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
