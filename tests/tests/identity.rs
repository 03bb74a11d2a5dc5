//! The trust boundary on NATS (DESIGN.md section 10), tested from the wrong side: connections
//! without a live credential are refused, each role reaches exactly its row of the table and
//! every other attempt is a permission violation that changes nothing, a revoked credential's
//! open connection is closed, and command ids are scoped by actor.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ims_bus::BusAuth;
use ims_tests::serde_json::{json, Value};
use ims_tests::{code, Service, REGION};
use tokio::sync::mpsc;

/// A connection that reports the server's errors and its own state changes.
struct Probe {
    nats: async_nats::Client,
    events: mpsc::UnboundedReceiver<String>,
}

async fn connect(url: &str, token: Option<&str>) -> Result<Probe, async_nats::ConnectError> {
    let (sender, events) = mpsc::unbounded_channel();
    let auth = token.map_or(BusAuth::None, |t| BusAuth::Token(t.to_owned()));
    let nats = auth
        .apply(async_nats::ConnectOptions::new())
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(event.to_string().to_lowercase());
            }
        })
        .connect(url)
        .await?;
    Ok(Probe { nats, events })
}

impl Probe {
    /// Waits for the server's permissions-violation error naming `subject`.
    async fn violation(&mut self, subject: &str) {
        let started = Instant::now();
        loop {
            let left = Duration::from_secs(5).saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(event)) if event.contains("permissions violation") => {
                    assert!(event.contains(&subject.to_lowercase()), "{event}");
                    return;
                }
                Ok(Some(_)) => {}
                _ => panic!("no permissions violation for {subject} within 5 s"),
            }
        }
    }

    async fn publish_refused(&mut self, subject: &str) {
        self.nats
            .publish(subject.to_owned(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
        self.violation(subject).await;
    }

    async fn subscribe_refused(&mut self, subject: &str) {
        let _subscription = self.nats.subscribe(subject.to_owned()).await.unwrap();
        self.nats.flush().await.unwrap();
        self.violation(subject).await;
    }

    async fn request(&self, subject: &str, body: Value) -> Value {
        let message = tokio::time::timeout(
            Duration::from_secs(10),
            self.nats
                .request(subject.to_owned(), Bytes::from(body.to_string())),
        )
        .await
        .expect("an answer within 10 s")
        .expect("a request");
        ims_tests::serde_json::from_slice(&message.payload).unwrap()
    }
}

fn key_id(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_live_credential_are_refused() {
    // Proves NATS authenticates every client: none, malformed, unknown and revoked all fail.
    let service = Service::start().await;
    let ims = &service.client;
    let url = service.nats.url();
    let revoked = ims.issue("tenant", Some("acme")).await;
    let reply = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("revoke-credential"),
            json!({"key_id": key_id(&revoked)}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let unknown = format!("ims_0123456789abcdef_{}", "0".repeat(64));
    for token in [
        None,
        Some("ims_nope"),
        Some(unknown.as_str()),
        Some(revoked.as_str()),
    ] {
        let error = connect(&url, token).await.err();
        assert!(
            error.is_some_and(|e| e.to_string().contains("authorization")),
            "{token:?} was let in"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_works_at_once_and_its_revocation_closes_open_connections() {
    // Proves runtime issue and revocation: no restart, and a kick within 60 s.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["acme"]).await;
    let token = ims.issue("tenant", Some("acme")).await;
    let mut acme = connect(&service.nats.url(), Some(&token)).await.unwrap();
    let subject = format!("ims.v1.{REGION}.q.acme.visible-images");
    let page = acme.request(&subject, json!({})).await;
    assert!(page["items"].is_array(), "{page}");
    let started = Instant::now();
    let reply = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("revoke-credential"),
            json!({"key_id": key_id(&token)}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    loop {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match tokio::time::timeout(left, acme.events.recv()).await {
            Ok(Some(event)) if event.contains("disconnected") => break,
            Ok(Some(_)) => {}
            _ => panic!("the revoked connection was still open after 60 s"),
        }
    }
    // It cannot come back: the next connect with the same token is refused.
    assert!(connect(&service.nats.url(), Some(&token)).await.is_err());
    let listed = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("list-credentials"),
            b"{}".to_vec(),
        )
        .await;
    let entry = listed["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key_id"] == key_id(&token))
        .cloned()
        .unwrap();
    assert!(entry["revoked_at"].is_string(), "{entry}");
    assert!(
        !listed.to_string().contains(&token[21..]),
        "a secret was listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reaches_only_its_own_subjects_and_every_other_attempt_changes_nothing() {
    // Proves the tenant row: another tenant's commands, queries, inbox and feed, the operator,
    // identity, events, log and audit subjects are all out of reach.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["acme", "beta"]).await;
    let (acme_token, beta_token) = (
        ims.issue("tenant", Some("acme")).await,
        ims.issue("tenant", Some("beta")).await,
    );
    let head = ims.head().await;
    let credentials = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("list-credentials"),
            b"{}".to_vec(),
        )
        .await["credentials"]
        .as_array()
        .unwrap()
        .len();
    let mut acme = connect(&service.nats.url(), Some(&acme_token))
        .await
        .unwrap();
    let r = format!("ims.v1.{REGION}");
    for subject in [
        format!("{r}.cmd.beta.create-image"),
        format!("{r}.q.beta.visible-images"),
        format!("{r}.op.register-tenant"),
        "ims.v1.iam.issue-credential".to_owned(),
        format!("{r}.events"),
        format!("{r}.log.read"),
        format!("{r}.audit.history"),
        format!("{r}.feed.acme"),
    ] {
        acme.publish_refused(&subject).await;
    }
    for subject in [
        "_INBOX.>".to_owned(),
        format!("_INBOX.{}.>", key_id(&beta_token)),
        format!("{r}.feed.beta"),
        format!("{r}.events"),
        format!("{r}.cmd.*.*"),
        format!("{r}.q.acme.*"),
    ] {
        acme.subscribe_refused(&subject).await;
    }
    // Its own row works on the same connection.
    let created = acme
        .request(
            &format!("{r}.cmd.acme.create-image"),
            json!({"name": "a", "disk": "data", "min_disk_gb": 1,
                   "source": {"file": {"url": "obs://a/a.raw", "format": "raw"}}}),
        )
        .await;
    assert_eq!(created["ok"], true, "{created}");
    assert_eq!(
        ims.head().await,
        head + 1,
        "only acme's own command was recorded"
    );
    let after = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("list-credentials"),
            b"{}".to_vec(),
        )
        .await["credentials"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, credentials, "no credential was issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_auditors_reach_exactly_their_rows() {
    // Proves the operator and auditor rows of the table, each from both sides.
    let service = Service::start().await;
    let ims = &service.client;
    let r = format!("ims.v1.{REGION}");
    let operator_token = ims.issue("operator", None).await;
    let auditor_token = ims.issue("auditor", None).await;
    let mut operator = connect(&service.nats.url(), Some(&operator_token))
        .await
        .unwrap();
    let mut auditor = connect(&service.nats.url(), Some(&auditor_token))
        .await
        .unwrap();

    let registered = operator
        .request(
            &format!("{r}.op.register-tenant"),
            json!({"tenant": "acme"}),
        )
        .await;
    assert_eq!(registered["ok"], true, "{registered}");
    let page = operator
        .request(&format!("{r}.q.acme.visible-images"), json!({}))
        .await;
    assert!(page["items"].is_array(), "{page}");
    let listed = operator
        .request("ims.v1.iam.list-credentials", json!({}))
        .await;
    assert_eq!(listed["ok"], true, "{listed}");
    let _feed = operator
        .nats
        .subscribe(format!("{r}.feed.acme"))
        .await
        .unwrap();
    for subject in [
        format!("{r}.cmd.acme.create-image"),
        format!("{r}.log.read"),
        format!("{r}.op.receive-copy"),
        format!("{r}.op.record-copy-outcome"),
        format!("{r}.events"),
    ] {
        operator.publish_refused(&subject).await;
    }
    for subject in [
        format!("{r}.events"),
        format!("{r}.q.*.*"),
        "_INBOX.>".to_owned(),
    ] {
        operator.subscribe_refused(&subject).await;
    }

    let page = auditor
        .request(&format!("{r}.q.acme.visible-images"), json!({}))
        .await;
    assert!(page["items"].is_array(), "{page}");
    let message = auditor
        .nats
        .request(
            format!("{r}.log.read"),
            Bytes::from_static(br#"{"from":1,"max":10}"#),
        )
        .await
        .unwrap();
    let batch: ims_log::LogBatch = ims_log::decode(&message.payload, || "log.read".into()).unwrap();
    assert_eq!(batch.head, 1);
    let _events = auditor.nats.subscribe(format!("{r}.events")).await.unwrap();
    for subject in [
        format!("{r}.op.register-tenant"),
        format!("{r}.cmd.acme.create-image"),
        "ims.v1.iam.issue-credential".to_owned(),
        "ims.v1.iam.list-credentials".to_owned(),
    ] {
        auditor.publish_refused(&subject).await;
    }
    for subject in [format!("{r}.feed.acme"), format!("{r}.op.*")] {
        auditor.subscribe_refused(&subject).await;
    }
    assert_eq!(
        ims.head().await,
        1,
        "only the operator's registration was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_ids_are_scoped_by_actor_and_bound_to_their_command() {
    // Proves the dedupe key (actor, command_id) with the command's digest: no principal gets
    // another's reply, and reusing an id for another command is a conflict.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["acme", "evil"]).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = |name: &str| {
        json!({"command_id": id, "name": name, "disk": "data", "min_disk_gb": 1,
               "source": {"file": {"url": "obs://a/a.raw", "format": "raw"}}})
    };
    let acme = ims.command("acme", "create-image", body("a")).await;
    let evil = ims.command("evil", "create-image", body("a")).await;
    assert_eq!(
        (acme["ok"].clone(), evil["ok"].clone()),
        (json!(true), json!(true))
    );
    assert_ne!(
        acme["image_id"], evil["image_id"],
        "evil got acme's reply: {evil}"
    );
    assert!(evil["replayed"].is_null(), "{evil}");
    let retried = ims.command("acme", "create-image", body("a")).await;
    assert_eq!(
        (&retried["image_id"], &retried["replayed"]),
        (&acme["image_id"], &json!(true)),
        "{retried}"
    );
    let reused = ims.command("acme", "create-image", body("b")).await;
    assert_eq!(code(&reused), "conflict", "{reused}");
    assert!(reused["error"]["message"].as_str().unwrap().contains(&id));
    // The same id reused within one batch of the writer is refused the same way.
    let id2 = uuid::Uuid::now_v7().to_string();
    let (first, second) = tokio::join!(
        ims.command(
            "acme",
            "update-image",
            json!({"command_id": id2, "image_id": acme["image_id"], "description": "x"})
        ),
        ims.command(
            "acme",
            "update-image",
            json!({"command_id": id2, "image_id": acme["image_id"], "description": "y"})
        ),
    );
    let codes = [code(&first), code(&second)];
    assert!(
        codes.contains(&"") && codes.contains(&"conflict"),
        "{first} {second}"
    );
}

fn imsd(args: &[&str]) -> ims_tests::KilledOnDrop {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting imsd");
    ims_tests::KilledOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_process_of_its_own_checks_tokens_with_the_identity_role() {
    // Proves split deployments keep the HTTP boundary: `imsd http` asks the identity role of
    // another process (ims.v1.iam.authenticate) and answers 401, 403 and 200 as `imsd run` does.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["acme", "beta"]).await;
    let other = tempfile::tempdir().unwrap();
    ims_tests::share_nats_keys(service.data_dir(), other.path());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap())
        .parse()
        .unwrap();
    let (url, http) = (service.nats.url(), addr.to_string());
    let data = other.path().to_str().unwrap();
    let _http = imsd(&[
        "http",
        "--nats-url",
        &url,
        "--regions",
        REGION,
        "--data-dir",
        data,
        "--http-addr",
        &http,
    ]);
    let started = Instant::now();
    // Ask only once the port is open: the helper treats a refused connection as a bug.
    while tokio::net::TcpStream::connect(addr).await.is_err()
        || ims_tests::http_get(addr, "/readyz").await.0 != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "imsd http never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (acme, beta) = (
        ims.issue("tenant", Some("acme")).await,
        ims.issue("tenant", Some("beta")).await,
    );
    let path = format!("/v1/{REGION}/tenants/acme/images");
    assert_eq!(
        ims_tests::http_get_with(addr, &path, Some(&acme)).await.0,
        200
    );
    assert_eq!(
        ims_tests::http_get_with(addr, &path, Some(&beta)).await.0,
        403
    );
    assert_eq!(ims_tests::http_get(addr, &path).await.0, 401);
    let unknown = format!("ims_0123456789abcdef_{}", "0".repeat(64));
    assert_eq!(
        ims_tests::http_get_with(addr, &path, Some(&unknown))
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_config_prints_a_configuration_nats_server_accepts() {
    // Proves `imsd nats-config` is complete: nats-server's own config test passes on it.
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
        .args(["nats-config", "--listen", "127.0.0.1:4999", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = String::from_utf8(output.stdout).unwrap();
    assert!(
        config.contains("auth_callout") && config.contains("127.0.0.1:4999"),
        "{config}"
    );
    let path = data.path().join("nats.conf");
    std::fs::write(&path, &config).unwrap();
    let checked = std::process::Command::new(ims_nats_server::nats_server_binary().unwrap())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "nats-server refused the configuration: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_lets_anyone_in_and_says_so() {
    // Proves the experiment switch works end to end and warns on stderr.
    let nats =
        ims_nats_server::NatsServer::start(Some(ims_nats_server::free_port().unwrap())).unwrap();
    let data = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap());
    let mut child = imsd(&[
        "run",
        "--insecure-no-auth",
        "--nats-url",
        &nats.url(),
        "--regions",
        REGION,
        "--data-dir",
        data.path().to_str().unwrap(),
        "--http-addr",
        &http,
    ]);
    let anyone = connect(&nats.url(), None).await.unwrap();
    let started = Instant::now();
    let subject = format!("ims.v1.{REGION}.op.register-tenant");
    let reply = loop {
        let sent = anyone
            .nats
            .request(subject.clone(), Bytes::from_static(br#"{"tenant":"acme"}"#));
        match tokio::time::timeout(Duration::from_secs(2), sent).await {
            Ok(Ok(message)) => {
                break ims_tests::serde_json::from_slice::<Value>(&message.payload).unwrap()
            }
            _ => assert!(
                started.elapsed() < Duration::from_secs(20),
                "imsd never answered"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply["ok"], true, "{reply}");
    let mut stderr = child.stderr.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut output = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut output).unwrap();
    assert!(output.contains("NO AUTHENTICATION"), "{output}");
}
