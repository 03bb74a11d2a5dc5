//! `deploy/cluster/`: the script that starts a replicated deployment on loopback runs and takes
//! commands, and the systemd units for real machines are valid units.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const IMSD: &str = env!("CARGO_BIN_EXE_imsd-under-test");
const IMSCTL: &str = env!("CARGO_BIN_EXE_imsctl-under-test");

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A first port of `count` consecutive ones that are free now, with room 2000 above.
fn free_ports(count: u16) -> u16 {
    loop {
        let first = ims_nats_server::free_port().unwrap();
        if first > 60_000 {
            continue;
        }
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if (first..first + count).all(|port| free(port) && free(port + 2000)) {
            return first;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_starts_three_nats_servers_and_a_leader_with_its_standby() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3);
    let http_port = free_ports(2);
    let script = Script(
        Command::new("bash")
            .arg(repo().join("deploy/cluster/run.sh"))
            .env("IMSD", IMSD)
            .env("IMS_CLUSTER_DIR", dir.path())
            .env("IMS_CLUSTER_PORT", port.to_string())
            .env("IMS_HTTP_PORT", http_port.to_string())
            .env("IMS_REGIONS", ims_tests::REGION)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting deploy/cluster/run.sh"),
    );
    let token_file = dir.path().join("identity/operator.token");
    ims_tests::operator_token(&dir.path().join("identity")).await;
    let urls = std::fs::read_to_string(dir.path().join("nats.url")).unwrap();
    let imsctl = |args: &[&str]| {
        Command::new(IMSCTL)
            .args(["--nats-url", urls.trim(), "--region", ims_tests::REGION])
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .output()
            .unwrap()
    };
    // The leader serves once JetStream has elected its leaders and node a holds the lease.
    let started = Instant::now();
    loop {
        let output = imsctl(&["op", "register-tenant", "acme"]);
        if output.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cluster took no command within 60 s: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The service's own connection: nobody else may use JetStream's API.
    let keys = ims_identity::setup::NatsKeys::load_or_create(&dir.path().join("identity")).unwrap();
    let service = ims_tests::connect_nats(
        urls.trim(),
        ims_bus::BusAuth::Nkey(keys.service.seed().unwrap()),
    )
    .await;
    let mut js = async_nats::jetstream::new(service);
    js.set_timeout(Duration::from_secs(10));
    let mut stream = js
        .get_stream(format!("IMS_LOG_{}", ims_tests::REGION))
        .await
        .expect("the region's stream exists");
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "three copies of the log");
    assert!(
        info.state.messages >= 1,
        "the command's group is in the stream"
    );
    // SIGTERM: the script stops what it started.
    drop(script);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "nats-server still runs after the script stopped"
    );
}

/// The running script, stopped with SIGTERM when dropped (a failing test included), so that
/// its trap stops the servers and nodes it started rather than leaving them behind.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_systemd_units_are_valid_units() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed; the units are not checked here");
        return;
    };
    let nats_server = ims_nats_server::nats_server_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let units = repo().join("deploy/cluster/systemd");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "service") {
            continue;
        }
        // The units name the installed binaries; here, the ones of this build.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/imsd", IMSD)
            .replace(
                "/usr/local/bin/nats-server",
                &nats_server.display().to_string(),
            );
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        checked.push(copy);
    }
    assert_eq!(checked.len(), 3, "{checked:?}");
    let output = Command::new(analyze)
        .arg("verify")
        .args(&checked)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn which(binary: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
        .ok_or(())
}
