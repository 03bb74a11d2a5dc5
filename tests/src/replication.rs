//! A replicated deployment (DESIGN.md section 12) for tests: nats-server with JetStream (one
//! server, or a cluster of three), the identity role in a process of its own, and imsd nodes
//! (`imsd run --no-identity --replication jetstream`) that lead or follow the region.

use std::path::Path;
use std::time::{Duration, Instant};

use ims_bus::BusAuth;
use ims_identity::setup::{ClusterRoutes, NatsKeys, ServerExtras};
use ims_nats_server::{free_port, NatsServer};

use crate::{connect_nats, share_nats_keys, Client, KilledOnDrop, REGION};

/// How long a test waits for a node to lead, follow or catch up.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// nats-server(s) with JetStream and the identity role, shared by the nodes.
#[derive(Debug)]
pub struct Deployment {
    pub identity_dir: tempfile::TempDir,
    pub servers: Vec<NatsServer>,
    binary: String,
    _identity: KilledOnDrop,
}

/// Starts `count` nats-servers with JetStream (their files, configurations under `dir`) and the
/// auth callout of `keys`: a cluster when more than one.
pub fn start_jetstream_servers(dir: &Path, keys: &NatsKeys, count: usize) -> Vec<NatsServer> {
    let ports: Vec<(u16, u16)> = (0..count)
        .map(|_| (free_port().unwrap(), free_port().unwrap()))
        .collect();
    let mut started = Vec::new();
    for (i, (port, cluster_port)) in ports.iter().enumerate() {
        let extras = ServerExtras {
            server_name: Some(format!("n{i}")),
            jetstream_dir: Some(dir.join(format!("jetstream-{i}"))),
            cluster: (count > 1).then(|| ClusterRoutes {
                name: "ims-test".to_owned(),
                listen: format!("127.0.0.1:{cluster_port}"),
                routes: ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (_, peer))| format!("nats-route://127.0.0.1:{peer}"))
                    .collect(),
            }),
        };
        let config = dir.join(format!("nats-{i}.conf"));
        let server = NatsServer::start_with_config(Some(*port), &config, |listen| {
            keys.server_config_with(listen, &extras)
        })
        .expect("starting nats-server");
        started.push(server);
    }
    started
}

impl Deployment {
    /// `servers` nats-servers (a cluster when more than one) and the identity role, with
    /// `binary` as imsd.
    pub async fn start(binary: &str, servers: usize) -> Self {
        let identity_dir = tempfile::tempdir().unwrap();
        let keys = NatsKeys::load_or_create(identity_dir.path()).unwrap();
        let started = start_jetstream_servers(identity_dir.path(), &keys, servers);
        let urls = started
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let identity = spawn(binary, "identity", &urls, identity_dir.path(), &[]);
        crate::operator_token(identity_dir.path()).await;
        Self {
            identity_dir,
            servers: started,
            binary: binary.to_owned(),
            _identity: identity,
        }
    }

    /// Every server's URL, comma-separated: clients move to another when one dies.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The operator's client.
    pub async fn operator(&self) -> Client {
        Client::connect(&self.urls(), REGION, self.identity_dir.path()).await
    }

    /// The service's own connection (its nkey), which may read the lease bucket.
    pub async fn service_connection(&self) -> async_nats::Client {
        let keys = NatsKeys::load_or_create(self.identity_dir.path()).unwrap();
        connect_nats(&self.urls(), BusAuth::Nkey(keys.service.seed().unwrap())).await
    }

    /// The node holding the region's lease, if any (`None` too when JetStream does not answer
    /// within 5 s, as while a cluster elects its leaders).
    pub async fn lease_holder(&self) -> Option<String> {
        let read = async {
            let js = async_nats::jetstream::new(self.service_connection().await);
            let store = js.get_key_value(ims_replication::LEASE_BUCKET).await.ok()?;
            let value = store.get(REGION).await.ok()??;
            Some(String::from_utf8_lossy(&value).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    }

    /// Waits until some node holds the lease, and says which.
    pub async fn any_leader(&self) -> String {
        let started = Instant::now();
        loop {
            if let Some(holder) = self.lease_holder().await {
                return holder;
            }
            assert!(
                started.elapsed() < NODE_TIMEOUT,
                "no node took the lead within {NODE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `node` holds the lease.
    pub async fn wait_leader(&self, node: &str) {
        let started = Instant::now();
        while self.lease_holder().await.as_deref() != Some(node) {
            assert!(
                started.elapsed() < NODE_TIMEOUT,
                "{node} did not take the lead within {NODE_TIMEOUT:?} (holder: {:?})",
                self.lease_holder().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `a` (with `args`) and waits until it leads and answers; returns it with the
    /// operator's client.
    pub async fn start_leader(&self, replicas: usize, args: &[&str]) -> (Node, Client) {
        let mut a = self.node("a", replicas, false).with_args(args);
        a.start();
        self.wait_leader("a").await;
        let client = self.operator().await;
        client.wait_ready().await;
        (a, client)
    }

    /// Starts node `b` (with `args`) as a standby.
    pub fn start_standby(&self, replicas: usize, args: &[&str]) -> Node {
        let mut b = self.node("b", replicas, true).with_args(args);
        b.start();
        b
    }

    /// The region's replicated log, on the service's own connection (one copy per server).
    pub async fn replicated_log(&self) -> ims_replication::ReplicatedLog {
        let region = ims_domain::RegionId::parse(REGION).unwrap();
        ims_replication::ReplicatedLog::open(
            &self.service_connection().await,
            &Default::default(),
            &region,
            self.servers.len(),
        )
        .await
        .expect("opening the region's replicated log")
    }

    /// A node of this deployment (not started): its own data dir, the service's keys.
    pub fn node(&self, name: &str, replicas: usize, standby: bool) -> Node {
        let data = tempfile::tempdir().unwrap();
        share_nats_keys(self.identity_dir.path(), data.path());
        Node {
            name: name.to_owned(),
            data,
            http_port: free_port().unwrap(),
            replicas,
            standby,
            binary: self.binary.clone(),
            urls: self.urls(),
            process: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// One imsd of a replicated deployment.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub data: tempfile::TempDir,
    pub http_port: u16,
    replicas: usize,
    standby: bool,
    binary: String,
    urls: String,
    process: Option<KilledOnDrop>,
    extra_args: Vec<String>,
    /// Environment of the next start (test hooks such as `IMS_FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

impl Node {
    /// Starts the node with these arguments too.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self
    }

    pub fn start(&mut self) {
        let replicas = self.replicas.to_string();
        let http = format!("127.0.0.1:{}", self.http_port);
        let mut args = vec![
            "--no-identity",
            "--replication",
            "jetstream",
            "--replicas",
            &replicas,
            "--node-id",
            &self.name,
            "--http-addr",
            &http,
        ];
        if self.standby {
            args.push("--standby");
        }
        args.extend(self.extra_args.iter().map(String::as_str));
        let mut process = spawn_command(&self.binary, "run", &self.urls, self.data.path(), &args);
        process.envs(self.env.iter().map(|(key, value)| (key, value)));
        self.process = Some(KilledOnDrop(process.spawn().expect("starting imsd")));
    }

    /// Whether the node's process has ended by itself.
    pub fn exited(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| matches!(process.try_wait(), Ok(Some(_))))
    }

    /// SIGKILL: as abrupt as a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running node.
    pub fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("a running node");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &process.id().to_string()])
                .status();
            let _ = process.wait();
        }
    }

    /// The node's log, opened once the node is stopped.
    pub fn log(&self) -> ims_log::EventLog {
        let path = ims_cli::runtime::log_path(
            self.data.path(),
            &ims_domain::RegionId::parse(REGION).unwrap(),
        );
        ims_log::EventLog::open(path, REGION).expect("opening the node's log")
    }

    /// A gauge of the node's own `/metrics` for the region (0 when absent or not yet serving).
    pub async fn gauge(&self, name: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await
        else {
            return 0.0;
        };
        let mut text = String::new();
        let request = b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if stream.write_all(request).await.is_err()
            || stream.read_to_string(&mut text).await.is_err()
        {
            return 0.0;
        }
        let prefix = format!("{name}{{region=\"{REGION}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until the node's log holds `position`.
    pub async fn wait_position(&self, position: u64) {
        let started = Instant::now();
        loop {
            let at = self.gauge("ims_replication_position").await as u64;
            if at >= position {
                return;
            }
            assert!(
                started.elapsed() < NODE_TIMEOUT,
                "node {} is at position {at}, not {position}, after {NODE_TIMEOUT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spawn(binary: &str, role: &str, urls: &str, data_dir: &Path, args: &[&str]) -> KilledOnDrop {
    KilledOnDrop(
        spawn_command(binary, role, urls, data_dir, args)
            .spawn()
            .expect("starting imsd"),
    )
}

fn spawn_command(
    binary: &str,
    role: &str,
    urls: &str,
    data_dir: &Path,
    args: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .args([role, "--nats-url", urls, "--regions", REGION])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("IMS_NODE_LOG").unwrap_or("warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(match std::env::var_os("IMS_NODE_LOG") {
            Some(_) => std::process::Stdio::inherit(),
            None => std::process::Stdio::null(),
        });
    command
}
