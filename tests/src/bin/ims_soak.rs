//! `ims-soak`: mixed commands and queries from many clients while imsd is SIGKILLed and
//! nats-server restarted at random moments; at the end it checks that every acknowledged command
//! is in the log, that no command id was applied twice, that each read model equals a rebuild
//! and that `imsctl audit verify` passes, and prints the counts.
//!
//! Run: `cargo run --release -p ims-tests --bin ims-soak -- --minutes 5`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ims_nats_server::free_port;
use ims_tests::{code, Client, KilledOnDrop, REGION};
use serde_json::{json, Value};

/// Re-executed as imsd or imsctl, so that the soak needs no other binary.
const ROLE_ENV: &str = "IMS_SOAK_ROLE";

/// Soak imsd under load, crashes and NATS restarts, then check that nothing was lost.
#[derive(Parser, Debug)]
#[command(name = "ims-soak", version)]
struct Options {
    /// How long the load and the chaos run.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Concurrent clients (tenants share them).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seed of the chaos schedule (same seed, same moments).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    acknowledged: Mutex<HashSet<uuid::Uuid>>,
    refused: AtomicU64,
    unknown: AtomicU64,
    queries: AtomicU64,
}

/// A small xorshift generator: the schedule needs no crate and repeats with its seed.
struct Chaos(u64);

impl Chaos {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(low_ms + self.next() % (high_ms - low_ms))
    }
}

fn spawn_imsd(nats_url: &str, data: &std::path::Path) -> anyhow::Result<KilledOnDrop> {
    Ok(KilledOnDrop(
        std::process::Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "imsd")
            .args(["run", "--nats-url", nats_url, "--regions", REGION])
            .arg("--data-dir")
            .arg(data)
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port()?)])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    ))
}

fn create_body(id: uuid::Uuid) -> Value {
    json!({"command_id": id.to_string(), "name": "soak", "disk": "data", "min_disk_gb": 1,
           "source": {"file": {"url": "obs://soak/disk.raw", "format": "raw"}}})
}

/// One client: creates images (retrying an unanswered command with the same id, as a client
/// should), shares and queries, until `stop`.
async fn client_loop(client: Client, tenant: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let subject = format!("ims.v1.{REGION}.cmd.{tenant}.create-image");
    let connection = client.tenant_connection(&tenant).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n % 4 == 0 {
            let query = format!("ims.v1.{REGION}.q.{tenant}.visible-images");
            let asked = connection.request(query, br#"{"limit":5}"#.to_vec().into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), asked).await {
                tally.queries.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let id = uuid::Uuid::now_v7();
        let payload = Bytes::from(serde_json::to_vec(&create_body(id)).unwrap());
        for _attempt in 0..3 {
            let sent = connection.request(subject.clone(), payload.clone());
            let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(2), sent).await else {
                continue; // lost with a crash or a restart: retry with the same id
            };
            let Ok(reply) = serde_json::from_slice::<Value>(&message.payload) else {
                break;
            };
            match code(&reply) {
                "" => {
                    tally.acknowledged.lock().unwrap().insert(id);
                    break;
                }
                "unavailable" => continue,
                _ => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if !tally.acknowledged.lock().unwrap().contains(&id) {
            tally.unknown.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("imsd") => return Ok(ims_cli::imsd::main()),
        Ok("imsctl") => return Ok(ims_cli::imsctl::main()),
        _ => {}
    }
    let options = Options::parse();
    tokio::runtime::Runtime::new()?.block_on(soak(options))
}

async fn soak(options: Options) -> anyhow::Result<std::process::ExitCode> {
    let data = tempfile::tempdir()?;
    let mut nats = ims_tests::secured_nats(data.path());
    let mut imsd = spawn_imsd(&nats.url(), data.path())?;
    let client = Client::connect(&nats.url(), REGION, data.path()).await;
    client.wait_ready().await;
    let tenants: Vec<String> = (0..4).map(|i| format!("soak-{i}")).collect();
    for tenant in &tenants {
        let reply = client
            .op(
                "register-tenant",
                json!({"tenant": tenant, "quota": 1_000_000}),
            )
            .await;
        anyhow::ensure!(reply["ok"] == true, "registering {tenant}: {reply}");
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for n in 0..options.clients {
        let tenant = tenants[n % tenants.len()].clone();
        workers.push(tokio::spawn(client_loop(
            client.clone(),
            tenant,
            tally.clone(),
            stop.clone(),
        )));
    }
    let (mut kills, mut nats_restarts) = (0, 0);
    let mut chaos = Chaos(options.seed | 1);
    let deadline = Instant::now() + Duration::from_secs_f64(options.minutes * 60.0);
    while Instant::now() < deadline {
        tokio::time::sleep(chaos.between(1_000, 5_000)).await;
        if chaos.next() % 3 == 0 {
            nats.restart()?;
            nats_restarts += 1;
        } else {
            imsd.kill()?;
            imsd.wait()?;
            kills += 1;
            tokio::time::sleep(chaos.between(100, 1_000)).await;
            imsd = spawn_imsd(&nats.url(), data.path())?;
        }
        eprintln!("chaos: {kills} kills, {nats_restarts} NATS restarts so far");
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }
    client.wait_ready().await;

    // Every acknowledged command is in the log; no (actor, command id) was applied twice.
    let mut runs: HashMap<(String, uuid::Uuid), Vec<u64>> = HashMap::new();
    let mut from = 1;
    loop {
        let batch = client.read_log(from, 1000).await;
        for envelope in &batch.envelopes {
            anyhow::ensure!(envelope.position() == from, "a gap at position {from}");
            from += 1;
            if let Some(id) = envelope.body.command_id {
                runs.entry((envelope.body.actor.clone(), uuid::Uuid::from_bytes(id)))
                    .or_default()
                    .push(envelope.position());
            }
        }
        if batch.envelopes.is_empty() || from > batch.head {
            break;
        }
    }
    let applied_twice = runs
        .values()
        .filter(|positions| positions.windows(2).any(|w| w[1] != w[0] + 1))
        .count();
    let in_log: HashSet<uuid::Uuid> = runs.keys().map(|(_, id)| *id).collect();
    let acknowledged = tally.acknowledged.lock().unwrap().clone();
    let lost = acknowledged.difference(&in_log).count();

    // The chain holds and every read model equals a rebuild: imsctl audit verify, offline.
    let mut stopping = imsd;
    nix_terminate(&mut stopping)?;
    let verify = std::process::Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, "imsctl")
        .args(["--region", REGION, "audit", "--data-dir"])
        .arg(data.path())
        .arg("verify")
        .output()?;
    let verified = verify.status.success();

    println!(
        "ims-soak: {:.1} minutes, {} clients",
        options.minutes, options.clients
    );
    println!(
        "commands acknowledged {}, refused {}, unanswered after retries {}, queries answered {}",
        acknowledged.len(),
        tally.refused.load(Ordering::Relaxed),
        tally.unknown.load(Ordering::Relaxed),
        tally.queries.load(Ordering::Relaxed)
    );
    println!(
        "imsd SIGKILLs {kills}, nats-server restarts {nats_restarts}, log head {}",
        from - 1
    );
    println!(
        "lost {lost}, applied twice {applied_twice}, audit verify {}",
        if verified { "ok" } else { "FAILED" }
    );
    if !verified {
        eprintln!("{}", String::from_utf8_lossy(&verify.stdout));
        eprintln!("{}", String::from_utf8_lossy(&verify.stderr));
    }
    let passed = lost == 0 && applied_twice == 0 && verified && !acknowledged.is_empty();
    Ok(if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Stops imsd with SIGTERM (a clean shutdown, so that the data dir can be opened offline), and
/// waits for it.
fn nix_terminate(imsd: &mut KilledOnDrop) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &imsd.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    let started = Instant::now();
    while imsd.try_wait()?.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "imsd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
