//! Helpers for the end-to-end tests: a real nats-server on a free port per test, configured with
//! the auth callout of its data dir, the service running on a temporary data dir (in this
//! process, or as a child process that can be killed), and small clients for commands, queries
//! and the log. Every test runs with authentication on: the client connects with the bootstrap
//! operator token and issues a credential for each tenant (and an auditor) it acts as.

pub mod latency;
pub mod replication;
pub mod stages;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ims_domain::{RegionId, SharingPolicy};
use ims_log::LogBatch;
use std::collections::HashMap;
use std::sync::Arc;

use ims_bus::BusAuth;
use ims_cli::runtime::{run, Config, Roles};
use ims_fetch::web_download::WebDownloadPolicy;
use ims_identity::setup::NatsKeys;
use ims_import::ImportSources;
use ims_nats_server::{free_port, NatsServer};
use ims_store::StoreLocation;
use ims_wire::commands::{BuildOutcomeDto, RegisterTenantRequest, ReportBuildRequest};
use ims_wire::Subjects;
use serde_json::{json, Value};

pub use serde_json;

/// How long a test waits for the service to come up before failing.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub const REGION: &str = "test-1";

/// Starts nats-server on a free port with the configuration (accounts, auth callout) of the
/// keys in `data_dir`, creating them when missing.
pub fn secured_nats(data_dir: &Path) -> NatsServer {
    let keys = NatsKeys::load_or_create(data_dir).expect("creating the NATS keys");
    NatsServer::start_with_config(
        Some(free_port().unwrap()),
        &data_dir.join("nats").join("nats-server.conf"),
        |listen| keys.server_config(listen),
    )
    .expect("starting nats-server")
}

/// Copies the NATS keys of one data dir into another: the processes of one deployment share them.
pub fn share_nats_keys(from: &Path, to: &Path) {
    let (from, to) = (from.join("nats"), to.join("nats"));
    std::fs::create_dir_all(&to).unwrap();
    for name in ["callout-issuer.nk", "service.nk", "system.nk"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// The bootstrap operator token of `data_dir`, waiting until imsd has written it.
pub async fn operator_token(data_dir: &Path) -> String {
    let path = ims_identity::setup::operator_token_path(data_dir);
    let started = std::time::Instant::now();
    loop {
        if let Ok(token) = std::fs::read_to_string(&path) {
            if token.ends_with('\n') {
                return token.trim().to_owned();
            }
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "imsd wrote no {} within {READY_TIMEOUT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects to NATS as `auth` says, with no request timeout of the client's own (10 s by
/// default): `request` bounds each wait itself, at 30 s, which a loaded 2-core CI machine needs.
pub async fn connect_nats(url: &str, auth: BusAuth) -> async_nats::Client {
    auth.apply(ims_bus::options("ims-tests"))
        .request_timeout(None)
        .connect(ims_bus::server_list(url).expect("NATS URLs").as_slice())
        .await
        .expect("connecting to NATS")
}

/// Whose connection a request goes out on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Holder {
    Tenant(String),
    Auditor,
}

/// A NATS client that talks the ims contract of one region. `nats` is the operator's connection
/// (or the service's, for tests that assemble the service's parts themselves); commands and
/// queries of a tenant go out on that tenant's own connection, and log reads on an auditor's,
/// each with a credential issued on first use, as the permissions of DESIGN.md section 10 need.
#[derive(Clone, Debug)]
pub struct Client {
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub region: RegionId,
    url: String,
    /// True when `nats` is the service's own connection, which may do everything.
    as_service: bool,
    holders: Arc<tokio::sync::Mutex<HashMap<Holder, async_nats::Client>>>,
}

impl Client {
    /// Connects as the operator of `data_dir` (its bootstrap token).
    pub async fn connect(url: &str, region: &str, data_dir: &Path) -> Self {
        let token = operator_token(data_dir).await;
        let nats = connect_nats(url, BusAuth::Token(token)).await;
        Self::with(nats, url, region, false)
    }

    /// Connects as the service itself (its nkey in `data_dir`), for tests that run the service's
    /// parts without the identity role.
    pub async fn connect_as_service(url: &str, region: &str, data_dir: &Path) -> Self {
        let keys = NatsKeys::load_or_create(data_dir).unwrap();
        let nats = connect_nats(url, BusAuth::Nkey(keys.service.seed().unwrap())).await;
        Self::with(nats, url, region, true)
    }

    fn with(nats: async_nats::Client, url: &str, region: &str, as_service: bool) -> Self {
        Self {
            nats,
            subjects: Subjects::default(),
            region: RegionId::parse(region).unwrap(),
            url: url.to_owned(),
            as_service,
            holders: Default::default(),
        }
    }

    /// Issues a credential over the operator's connection: the whole token.
    pub async fn issue(&self, role: &str, tenant: Option<&str>) -> String {
        let body = ims_wire::iam::IssueCredential {
            role: role.to_owned(),
            tenant: tenant.map(str::to_owned),
        };
        let reply = self
            .request_on(
                &self.nats,
                self.subjects.iam("issue-credential"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(reply["ok"], true, "issuing a {role} credential: {reply}");
        reply["token"].as_str().unwrap().to_owned()
    }

    /// A connection with a fresh credential of `role` (and `tenant`).
    pub async fn connect_with_new_credential(
        &self,
        role: &str,
        tenant: Option<&str>,
    ) -> async_nats::Client {
        let token = self.issue(role, tenant).await;
        connect_nats(&self.url, BusAuth::Token(token)).await
    }

    /// The connection a request on `subject` goes out on.
    async fn connection_for(&self, subject: &str) -> async_nats::Client {
        if self.as_service {
            return self.nats.clone();
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        let holder = match tokens.as_slice() {
            [_, "v1", _, "cmd" | "q", tenant, _] => Holder::Tenant((*tenant).to_owned()),
            [_, "v1", _, "log", "read"] | [_, "v1", _, "audit", _] => Holder::Auditor,
            _ => return self.nats.clone(),
        };
        let mut holders = self.holders.lock().await;
        if let Some(connection) = holders.get(&holder) {
            return connection.clone();
        }
        let connection = match &holder {
            Holder::Tenant(tenant) => {
                self.connect_with_new_credential("tenant", Some(tenant))
                    .await
            }
            Holder::Auditor => self.connect_with_new_credential("auditor", None).await,
        };
        holders.insert(holder, connection.clone());
        connection
    }

    /// A connection of a tenant, with a credential issued for it (cached).
    pub async fn tenant_connection(&self, tenant: &str) -> async_nats::Client {
        self.connection_for(&self.subjects.query(
            &self.region,
            &ims_domain::TenantId::parse(tenant).unwrap(),
            "x",
        ))
        .await
    }

    /// An auditor's connection (cached).
    pub async fn auditor_connection(&self) -> async_nats::Client {
        self.connection_for(&self.subjects.log_read(&self.region))
            .await
    }

    /// Sends raw bytes to a subject and parses the JSON answer. While nothing listens on the
    /// subject yet (a service still starting), it retries for up to the ready timeout.
    pub async fn request(&self, subject: String, payload: Vec<u8>) -> Value {
        let connection = self.connection_for(&subject).await;
        self.request_on(&connection, subject, payload).await
    }

    /// [`Client::request`] on a given connection.
    pub async fn request_on(
        &self,
        connection: &async_nats::Client,
        subject: String,
        payload: Vec<u8>,
    ) -> Value {
        let started = std::time::Instant::now();
        let message = loop {
            let sent = connection.request(subject.clone(), Bytes::from(payload.clone()));
            match tokio::time::timeout(Duration::from_secs(30), sent).await {
                Err(_) => panic!("no answer on {subject} within 30 s"),
                Ok(Ok(message)) => break message,
                Ok(Err(error))
                    if error.kind() == async_nats::RequestErrorKind::NoResponders
                        && started.elapsed() < READY_TIMEOUT =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(error)) => panic!("request on {subject} failed: {error}"),
            }
        };
        serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
            panic!(
                "answer on {subject} is not JSON ({e}): {:?}",
                message.payload
            )
        })
    }

    /// A tenant command; `tenant` is the subject's tenant token.
    pub async fn command(&self, tenant: &str, name: &str, body: Value) -> Value {
        let subject = format!(
            "{}.v1.{}.cmd.{tenant}.{name}",
            self.subjects.prefix, self.region
        );
        self.request(subject, serde_json::to_vec(&body).unwrap())
            .await
    }

    /// A typed operator command (see `ims_wire::commands`), without a command id.
    pub async fn op_typed<T: ims_wire::commands::CommandBody>(&self, body: &T) -> Value {
        let subject = self.subjects.operator_command(&self.region, T::NAME);
        self.request(
            subject,
            ims_wire::commands::command_payload(body, None, None),
        )
        .await
    }

    /// An operator command as raw JSON: for tests of the wire format itself.
    pub async fn op(&self, name: &str, body: Value) -> Value {
        let subject = self.subjects.operator_command(&self.region, name);
        self.request(subject, serde_json::to_vec(&body).unwrap())
            .await
    }

    /// A tenant query.
    pub async fn query(&self, tenant: &str, name: &str, body: Value) -> Value {
        let subject = format!(
            "{}.v1.{}.q.{tenant}.{name}",
            self.subjects.prefix, self.region
        );
        self.request(subject, serde_json::to_vec(&body).unwrap())
            .await
    }

    /// A batch of the log from `from`.
    pub async fn read_log(&self, from: u64, max: usize) -> LogBatch {
        let subject = self.subjects.log_read(&self.region);
        let payload = serde_json::to_vec(&ims_bus::LogReadRequest { from, max }).unwrap();
        let connection = self.connection_for(&subject).await;
        // A read, so asked again for up to a minute: a request sent while a NATS server of a
        // cluster has just died can be lost on the way (seen once in CI on two loaded cores),
        // and while the lease changes hands no node serves log.read ("no responders", at once;
        // seen once in CI) or the old leader refuses it, until the next leader has caught up.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let asked = connection.request(subject.clone(), Bytes::from(payload.clone()));
            match tokio::time::timeout(Duration::from_secs(20), asked).await {
                // A leader whose lease lapsed answers `unavailable` until it steps down.
                Ok(Ok(message))
                    if message
                        .headers
                        .as_ref()
                        .is_some_and(|h| h.get("Ims-Error").is_some()) =>
                {
                    let refusal = String::from_utf8_lossy(&message.payload).into_owned();
                    eprintln!("log.read from {from}: {refusal}, asking again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(Ok(message)) => {
                    return ims_log::decode(&message.payload, || "log.read reply".into())
                        .expect("a log batch");
                }
                Ok(Err(error)) => {
                    eprintln!("log.read from {from}: {error}, asking again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => eprintln!("log.read from {from}: no answer in 20 s, asking again"),
            }
        }
        panic!("log.read from {from}: no answer in 60 s")
    }

    /// The durable head of the region's log.
    pub async fn head(&self) -> u64 {
        self.read_log(1, 1).await.head
    }

    /// Waits until the command service answers.
    pub async fn wait_ready(&self) {
        let started = std::time::Instant::now();
        let connection = self
            .connection_for(&self.subjects.log_read(&self.region))
            .await;
        loop {
            let subject = self.subjects.log_read(&self.region);
            let payload = Bytes::from_static(br#"{"from":1,"max":1}"#);
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), connection.request(subject, payload))
                    .await
            {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the service did not come up within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers tenants with the default quota.
    pub async fn register(&self, tenants: &[&str]) {
        self.register_quota(tenants, None).await;
    }

    /// Registers tenants allowed `quota` images each (load tests create many).
    pub async fn register_with_quota(&self, tenants: &[&str], quota: u32) {
        self.register_quota(tenants, Some(quota)).await;
    }

    async fn register_quota(&self, tenants: &[&str], quota: Option<u32>) {
        for tenant in tenants {
            let reply = self
                .op_typed(&RegisterTenantRequest {
                    tenant: (*tenant).to_owned(),
                    quota,
                    organization: None,
                })
                .await;
            assert_eq!(reply["ok"], true, "registering {tenant}: {reply}");
        }
    }

    /// Creates a system image owned by `tenant` and reports its build: an active private image.
    pub async fn active_image(&self, tenant: &str, changes: Value) -> String {
        let mut body = json!({
            "name": "web-2026", "disk": "system",
            "source": {"ecs": {"instance_id": "ecs-42", "data_disk_ids": []}},
            "os": {"platform": "ubuntu", "version": "22.04", "arch": "x86_64"},
            "min_disk_gb": 40, "tags": {"env": "prod"}
        });
        for (key, value) in changes.as_object().cloned().unwrap_or_default() {
            body[key] = value;
        }
        let created = self.command(tenant, "create-image", body).await;
        assert_eq!(created["ok"], true, "create-image: {created}");
        let id = created["image_id"].as_str().unwrap().to_owned();
        let built = self
            .op_typed(&ReportBuildRequest {
                image_id: id.clone(),
                outcome: BuildOutcomeDto::Succeeded,
                size_bytes: Some(1 << 30),
                checksum_sha256: Some("ab".repeat(32)),
                os_hash_algo: None,
                os_hash_value: None,
                detected_format: None,
                virtual_size: None,
                reason: None,
            })
            .await;
        assert_eq!(built["ok"], true, "report-build: {built}");
        id
    }
}

/// The one address the tests' services allow-list for web-downloads: a mirror the tests run on
/// this loopback address; every other loopback address stays refused, so a redirect to
/// 127.0.0.1 still tests the rules.
pub const WEB_MIRROR: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The error code of a reply, or "" for a success.
pub fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

/// The service running inside the test process, on its own nats-server and data dir.
#[derive(Debug)]
pub struct Service {
    pub nats: NatsServer,
    pub data: tempfile::TempDir,
    pub http_addr: std::net::SocketAddr,
    pub client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub async fn start() -> Self {
        Self::start_with(Roles::ALL, &[REGION]).await
    }

    pub async fn start_with(roles: Roles, regions: &[&str]) -> Self {
        Self::start_on(roles, regions, StoreLocation::Local).await
    }

    /// A service whose image files are kept in `store`.
    pub async fn start_on(roles: Roles, regions: &[&str], store: StoreLocation) -> Self {
        Self::start_configured(roles, regions, |config| config.store = store).await
    }

    /// A service with its configuration changed by `edit`.
    pub async fn start_configured(
        roles: Roles,
        regions: &[&str],
        edit: impl FnOnce(&mut Config),
    ) -> Self {
        if std::env::var_os("IMS_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env("IMS_TEST_LOG"))
                .with_test_writer()
                .try_init();
        }
        let data = tempfile::tempdir().unwrap();
        let nats = secured_nats(data.path());
        let http_addr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let mut config = Self::config_for(&nats, data.path(), http_addr, roles, regions);
        edit(&mut config);
        let (stop, task) = launch(config);
        let service = Self {
            client: Client::connect(&nats.url(), regions[0], data.path()).await,
            nats,
            data,
            http_addr,
            stop: Some(stop),
            task: Some(task),
        };
        service.client.wait_ready().await;
        service
    }

    fn config_for(
        nats: &NatsServer,
        data_dir: &Path,
        http_addr: std::net::SocketAddr,
        roles: Roles,
        regions: &[&str],
    ) -> Config {
        Config {
            nats_url: nats.url(),
            data_dir: data_dir.to_path_buf(),
            regions: regions
                .iter()
                .map(|r| RegionId::parse(r).unwrap())
                .collect(),
            http_addr,
            subjects: Subjects::default(),
            roles,
            policy: SharingPolicy::default(),
            insecure_no_auth: false,
            import_sources: ImportSources {
                root: Some(Self::import_root_of(data_dir)),
                web: WebDownloadPolicy {
                    allowed: vec![WEB_MIRROR],
                },
            },
            store: Default::default(),
            snapshot_every: ims_projector::SNAPSHOT_EVERY_EVENTS,
            replication: None,
        }
    }

    pub fn config(&self, roles: Roles, regions: &[&str]) -> Config {
        Self::config_for(&self.nats, self.data.path(), self.http_addr, roles, regions)
    }

    /// Where the tests put files to import (`--import-root`).
    pub fn import_root_of(data_dir: &Path) -> std::path::PathBuf {
        let root = data_dir.join("imports");
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    /// [`Service::import_root_of`] this service's data dir.
    pub fn import_root(&self) -> std::path::PathBuf {
        Self::import_root_of(self.data.path())
    }

    fn launch(&mut self, roles: Roles, regions: &[&str]) {
        let (stop, task) = launch(self.config(roles, regions));
        self.task = Some(task);
        self.stop = Some(stop);
    }

    /// A second imsd of this deployment, as another process would be: its own data dir (the
    /// NATS keys copied) and HTTP port, the same nats-server, serving `regions` on `store`,
    /// without the identity role (one per deployment). Stopped when dropped.
    pub fn peer(&self, regions: &[&str], store: StoreLocation) -> Peer {
        let data = tempfile::tempdir().unwrap();
        share_nats_keys(self.data.path(), data.path());
        let http_addr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let roles = Roles {
            identity: false,
            ..Roles::ALL
        };
        let mut config = Self::config_for(&self.nats, data.path(), http_addr, roles, regions);
        config.store = store;
        let (stop, task) = launch(config);
        Peer {
            data,
            http_addr,
            _stop: stop,
            _task: task,
        }
    }

    /// An HTTP GET with `token` as the bearer credential.
    pub async fn http_get_as(&self, token: &str, path: &str) -> (u16, Value) {
        http_get_with(self.http_addr, path, Some(token)).await
    }

    /// Stops the service gracefully and waits until it has returned.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the service task panicked")
                .expect("the service failed");
        }
    }

    /// Stops and starts the service again on the same data dir and NATS.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch(Roles::ALL, &[REGION]);
        self.client.wait_ready().await;
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

type ServiceTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Runs the service with `config` in this process until the returned sender fires.
fn launch(config: Config) -> (tokio::sync::oneshot::Sender<()>, ServiceTask) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(config, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// Another imsd of a deployment (see [`Service::peer`]).
#[derive(Debug)]
pub struct Peer {
    pub data: tempfile::TempDir,
    pub http_addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _task: ServiceTask,
}

/// A plain HTTP/1.1 GET on loopback without credentials: the status and the body parsed as JSON
/// (or as a string).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    http_get_with(addr, path, None).await
}

/// [`http_get`] with an optional bearer token.
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    use http_body_util::BodyExt as _;
    let mut request = hyper::Request::get(path).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a GET request");
    let response = ims_fetch::client::send(addr, "localhost", false, request)
        .await
        .expect("the HTTP API answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

impl Client {
    /// A query that waits until the read models include `min_position`.
    pub async fn query_at(
        &self,
        tenant: &str,
        name: &str,
        mut body: Value,
        min_position: u64,
    ) -> Value {
        body["min_position"] = json!(min_position);
        self.query(tenant, name, body).await
    }

    /// Ids of the images a tenant sees (first 1000), as of `min_position`.
    pub async fn visible_ids(&self, tenant: &str, min_position: u64) -> Vec<String> {
        let page = self
            .query_at(
                tenant,
                "visible-images",
                json!({"limit": 1000}),
                min_position,
            )
            .await;
        assert!(page["items"].is_array(), "visible-images failed: {page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A local S3 (moto_server, PyPI `moto[server]`, which `.ci/run` installs) on a free port.
#[derive(Debug)]
pub struct LocalS3 {
    _process: KilledOnDrop,
    pub endpoint: String,
}

impl LocalS3 {
    /// Starts one; `None` (with a note on stderr) when moto_server is not installed, except
    /// under CI, where the S3 tests must run.
    pub fn start() -> Option<Self> {
        let binary = std::env::var_os("MOTO_SERVER_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-moto/bin");
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .chain([venv])
                    .map(|dir| dir.join("moto_server"))
                    .find(|candidate| candidate.is_file())
            });
        let Some(binary) = binary else {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server is needed: deploy/install-moto.sh installs it"
            );
            eprintln!("moto_server is not installed (deploy/install-moto.sh): S3 skipped");
            return None;
        };
        let port = free_port().unwrap();
        let process = std::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let process = KilledOnDrop(process);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Creates `bucket` and names a store in it under `prefix`.
    pub fn store(&self, bucket: &str, prefix: &str) -> StoreLocation {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {answer}"
        );
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&skip_signature=true",
            self.endpoint
        )
        .parse()
        .unwrap()
    }
}

/// A child process that is killed when dropped, so that a failing test leaves nothing running.
#[derive(Debug)]
pub struct KilledOnDrop(pub std::process::Child);

impl std::ops::Deref for KilledOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KilledOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl KilledOnDrop {
    /// Sends SIGTERM, the signal that asks imsd to stop cleanly.
    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {}", self.0.id());
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `imsd <role>` (the binary at `binary`, as built for the tests) on `nats_url` and
/// `data_dir` for `regions` (comma-separated), quietly, on a free HTTP port.
pub fn spawn_imsd(
    binary: &str,
    role: &str,
    nats_url: &str,
    data_dir: &Path,
    regions: &str,
) -> KilledOnDrop {
    spawn_imsd_with_env(binary, role, nats_url, data_dir, regions, &[])
}

/// [`spawn_imsd`] with extra environment variables (test hooks).
pub fn spawn_imsd_with_env(
    binary: &str,
    role: &str,
    nats_url: &str,
    data_dir: &Path,
    regions: &str,
    env: &[(&str, &str)],
) -> KilledOnDrop {
    let child = std::process::Command::new(binary)
        .args([role, "--nats-url", nats_url, "--regions", regions])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", free_port().unwrap()),
        ])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting imsd");
    KilledOnDrop(child)
}
