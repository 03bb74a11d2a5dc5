//! Audit end to end: verify finds a tampered byte at its position, as-of answers what the live
//! queries answered then, who-could-use follows every sharing transition, and an export can be
//! checked with nothing but SHA-256.

use std::process::Command;

use ims_audit::{as_of_online, replay, LogSource, Until};
use ims_cli::runtime::log_path;
use ims_cli::runtime::Roles;
use ims_domain::{ImageId, RegionId, TenantId};
use ims_log::EventLog;
use ims_projection::queries::QueryParams;
use ims_tests::serde_json::{json, Value};
use ims_tests::{Service, REGION};
use sha2::{Digest, Sha256};

fn imsctl(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(3),
        "imsctl could not work: {stderr}"
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

async fn online(service: &Service) -> LogSource {
    LogSource::online(
        service.client.auditor_connection().await,
        &Default::default(),
        &RegionId::parse(REGION).unwrap(),
    )
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_answers_what_the_live_queries_answered_at_each_moment() {
    // Proves time travel: record live answers during a scripted run, then replay each moment,
    // here and through the service's `audit.as-of`, which starts from its snapshots (one every
    // 3 events, so most moments lie on a chain of deltas and a few events after it).
    let service = Service::start_configured(Roles::ALL, &[REGION], |config| {
        config.snapshot_every = 3;
    })
    .await;
    let ims = &service.client;
    ims.register(&["owner", "a", "b"]).await;
    let image = ims.active_image("owner", json!({})).await;
    let steps = [
        (
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["a", "b"]}),
        ),
        ("a", "accept-share", json!({"image_id": image})),
        ("b", "reject-share", json!({"image_id": image})),
        (
            "owner",
            "unshare-image",
            json!({"image_id": image, "tenants": ["a"]}),
        ),
        (
            "owner",
            "list-on-marketplace",
            json!({"image_id": image, "publisher": "Owner Inc", "price": {"model": "free"}}),
        ),
        ("owner", "delete-image", json!({"image_id": image})),
    ];
    let mut recorded: Vec<(u64, String, &str, Value)> = Vec::new();
    for (actor, command, body) in steps.iter().cloned() {
        if command == "list-on-marketplace" {
            ims.command(
                "owner",
                "unshare-image",
                json!({"image_id": image, "all": true}),
            )
            .await;
        }
        let reply = ims.command(actor, command, body).await;
        assert_eq!(reply["ok"], true, "{command}: {reply}");
        let at = reply["position"].as_u64().unwrap();
        for viewer in ["owner", "a", "b"] {
            for query in ["visible-images", "shared-with-me", "share-counts"] {
                let answer = ims
                    .query_at(
                        viewer,
                        query,
                        json!({"limit": 1000, "include_deprecated": true}),
                        at,
                    )
                    .await;
                recorded.push((at, viewer.to_owned(), query, answer));
            }
        }
        let members = ims
            .query_at("owner", "members", json!({"image_id": image}), at)
            .await;
        recorded.push((at, "owner".to_owned(), "members", members));
    }
    let source = online(&service).await;
    let auditor = service.client.auditor_connection().await;
    let region = RegionId::parse(REGION).unwrap();
    for (at, viewer, query, live) in recorded {
        let then = replay(&source, &region, Until::Position(at), |_| {})
            .await
            .unwrap();
        let params = QueryParams {
            limit: Some(1000),
            include_deprecated: Some(true),
            image_id: Some(image.clone()),
            ..Default::default()
        };
        let answer = then.query(&tenant(&viewer), ims_wire::Query::parse(query).unwrap(), &params).unwrap_or_else(|e| json!({"ok": false, "error": {"code": e.to_string().split(':').next().unwrap_or(""), "message": e.to_string()}}));
        let served = as_of_online(
            &auditor,
            &Default::default(),
            &region,
            &tenant(&viewer),
            ims_wire::Query::parse(query).unwrap(),
            params,
            Until::Position(at),
        )
        .await;
        if live["ok"] == false {
            assert_eq!(
                answer["ok"], false,
                "at {at}, {viewer} {query}: live {live}, as-of {answer}"
            );
            assert!(served.is_err(), "at {at}, {viewer} {query}: {served:?}");
        } else {
            assert_eq!(answer, live, "at {at}, {viewer} {query}");
            assert_eq!(
                served.unwrap(),
                (at, live),
                "served, at {at}, {viewer} {query}"
            );
        }
    }
    let snapshots = ims_projector::snapshots_path(&ims_projector::projections_path(
        service.data.path(),
        &region,
    ));
    assert!(
        ims_projection::snapshot::list(
            &snapshots,
            &ims_projection::snapshot::model_name::<ims_projection::Catalog>(),
        )
        .unwrap()
        .len()
            > 3,
        "the service wrote snapshots every 3 events"
    );
    // And by time: the moment of the share, given as the event's recorded time.
    let share_event = &source.batch(4, 1).await.unwrap().envelopes[0];
    let then = replay(
        &source,
        &region,
        Until::Time(share_event.body.recorded_at_ms),
        |_| {},
    )
    .await
    .unwrap();
    assert!(then.position >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_could_use_follows_share_accept_reject_unshare_recycle_and_purge() {
    // Proves who-could-use at each sharing transition.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "a", "b"]).await;
    let image = ims.active_image("owner", json!({})).await;
    let mut moments: Vec<(u64, Vec<&str>)> = vec![(ims.head().await, vec!["owner"])];
    let script: [(&str, &str, Value, &[&str]); 7] = [
        (
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["a", "b"]}),
            &["owner"],
        ),
        (
            "a",
            "accept-share",
            json!({"image_id": image}),
            &["a", "owner"],
        ),
        (
            "b",
            "accept-share",
            json!({"image_id": image}),
            &["a", "b", "owner"],
        ),
        (
            "b",
            "reject-share",
            json!({"image_id": image}),
            &["a", "owner"],
        ),
        (
            "owner",
            "unshare-image",
            json!({"image_id": image, "tenants": ["a"]}),
            &["owner"],
        ),
        // Into the recycle bin: its owner alone still reaches it; then purged from there.
        (
            "owner",
            "delete-image",
            json!({"image_id": image}),
            &["owner"],
        ),
        ("owner", "delete-image", json!({"image_id": image}), &[]),
    ];
    for (actor, command, body, expected) in script {
        let reply = ims.command(actor, command, body).await;
        moments.push((reply["position"].as_u64().unwrap(), expected.to_vec()));
    }
    let source = online(&service).await;
    let auditor_nats = service.client.auditor_connection().await;
    let region = RegionId::parse(REGION).unwrap();
    let id = ImageId::parse(&image).unwrap();
    let accepted_at = moments[2].0;
    for (position, expected) in moments {
        let then =
            ims_audit::replay_with_state(&source, &region, Until::Position(position), |_| {})
                .await
                .unwrap();
        let answer = then.who_could_use(id).unwrap();
        // Online, from the image's stream in the writer's process: the same answer.
        let from_stream = ims_audit::who_could_use_online(
            &auditor_nats,
            &Default::default(),
            &region,
            id,
            Until::Position(position),
        )
        .await
        .unwrap();
        assert_eq!(from_stream, answer, "at position {position}");
        let tenants: Vec<&str> = answer["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant"].as_str().unwrap())
            .collect();
        assert_eq!(tenants, expected, "at position {position}: {answer}");
    }
    let moments_accepted = accepted_at.to_string();
    let auditor = service.client.issue("auditor", None).await;
    let (code, out) = imsctl(&[
        "--token",
        &auditor,
        "--nats-url",
        &service.nats.url(),
        "--region",
        REGION,
        "audit",
        "who-could-use",
        "--image",
        &image,
        "--position",
        &moments_accepted,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("accepted_share") && out.contains("owner"),
        "{out}"
    );
}

fn check_export_independently(lines: &str) -> Result<u64, u64> {
    let mut prev = [0u8; 32].to_vec();
    let mut count = 0;
    for line in lines.lines() {
        let event: Value = ims_tests::serde_json::from_str(line).unwrap();
        let position = event["position"].as_u64().unwrap();
        let body = hex::decode(event["body_hex"].as_str().unwrap()).unwrap();
        let prev_hash = hex::decode(event["prev_hash"].as_str().unwrap()).unwrap();
        let hash = hex::decode(event["hash"].as_str().unwrap()).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(&prev_hash);
        hasher.update(&body);
        if prev_hash != prev || hasher.finalize().to_vec() != hash || position != count + 1 {
            return Err(position);
        }
        prev = hash;
        count += 1;
    }
    Ok(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_byte_is_found_by_verify_and_by_an_independent_check_of_the_export_at_the_same_position(
) {
    // Proves tamper evidence end to end, offline, with the CLI's exit codes.
    const TAMPERED: u64 = 40;
    let mut service = Service::start().await;
    let ims = &service.client;
    ims.op("register-tenant", json!({"tenant": "t1", "quota": 100_000}))
        .await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let ims = ims.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..70 {
                ims.command("t1", "create-image", json!({"name": "x", "disk": "data", "min_disk_gb": 1, "source": {"file": {"url": "u", "format": "raw"}}})).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let head = ims.head().await;
    assert!(
        head > ims_log::TAIL_CHECK_EVENTS + TAMPERED,
        "the tampered event must lie before the tail that open checks"
    );
    let auditor = service.client.issue("auditor", None).await;
    let (code, out) = imsctl(&[
        "--token",
        &auditor,
        "--nats-url",
        &service.nats.url(),
        "--region",
        REGION,
        "audit",
        "verify",
    ]);
    assert_eq!(code, 0, "online verify of an intact log: {out}");
    service.stop().await;
    let data_dir = service.data_dir().to_str().unwrap().to_owned();
    let (code, export) = imsctl(&[
        "--region",
        REGION,
        "audit",
        "--data-dir",
        &data_dir,
        "export",
    ]);
    assert_eq!(code, 0);
    assert_eq!(check_export_independently(&export), Ok(head));

    {
        let db = ims_log::open_sled(sled::Config::new().path(log_path(
            service.data_dir(),
            &RegionId::parse(REGION).unwrap(),
        )))
        .unwrap();
        // Records hold one append each, stored under their last position: the first key at or
        // after the tampered position holds it.
        let (key, value) = db
            .range([&[b'e'][..], &TAMPERED.to_be_bytes()].concat()..)
            .next()
            .unwrap()
            .unwrap();
        let last_position = u64::from_be_bytes(key[1..].try_into().unwrap());
        let mut envelopes = ims_log::decode_record(&value, last_position).unwrap();
        let tampered = envelopes
            .iter_mut()
            .find(|envelope| envelope.position() == TAMPERED)
            .unwrap();
        tampered.body.payload[0] ^= 0x20;
        db.insert(key, ims_log::encode_record(&envelopes)).unwrap();
        db.flush().unwrap();
    }
    let (code, out) = imsctl(&[
        "--region",
        REGION,
        "--json",
        "audit",
        "--data-dir",
        &data_dir,
        "verify",
    ]);
    assert_eq!(code, 1, "verify fails on a tampered log: {out}");
    // A mistyped data dir or region is an error naming what is there, never "verified", and
    // the audit creates nothing.
    let typo = format!("{data_dir}-typo");
    for (dir, region, names) in [(&typo, REGION, "none"), (&data_dir, "other-1", REGION)] {
        let output = Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
            .args(["--region", region, "audit", "--data-dir", dir, "verify"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("no log of region {region}"))
                && stderr.contains(&format!("regions with a log there: {names}")),
            "{stderr}"
        );
    }
    assert!(
        !std::path::Path::new(&typo).exists(),
        "the audit created {typo}"
    );
    let report: Value = ims_tests::serde_json::from_str(&out).unwrap();
    assert_eq!(report["chain"]["first_bad_position"], TAMPERED, "{report}");
    let (_, export) = imsctl(&[
        "--region",
        REGION,
        "audit",
        "--data-dir",
        &data_dir,
        "export",
    ]);
    assert_eq!(check_export_independently(&export), Err(TAMPERED));
    let log = EventLog::open(
        log_path(service.data_dir(), &RegionId::parse(REGION).unwrap()),
        REGION,
    )
    .unwrap();
    assert_eq!(
        log.verify(1..=head).unwrap().unwrap_err().position,
        TAMPERED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_audits_refuse_bad_requests_by_name_and_tenants_altogether() {
    // Hostile cases of `audit.who-could-use` and `audit.as-of`: garbage, contradictory moments,
    // a bad id, an unknown query or parameter, and a principal that is not an auditor.
    let service = Service::start().await;
    service.client.register(&["owner"]).await;
    let subject = format!("ims.v1.{REGION}.audit.who-could-use");
    let auditor = service.client.auditor_connection().await;
    for (body, says) in [
        (&b"{not json"[..], "who-could-use expects"),
        (
            &br#"{"image_id":"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f","position":5,"at_ms":9}"#[..],
            "not both",
        ),
        (&br#"{"image_id":"web-1"}"#[..], "web-1"),
        (
            &br#"{"image_id":"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f","force":true}"#[..],
            "force",
        ),
    ] {
        let message = auditor
            .request(subject.clone(), bytes::Bytes::from_static(body))
            .await
            .unwrap();
        let answer: Value = ims_tests::serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    // The same for `audit.as-of`: each refusal names what is wrong and what is accepted.
    let as_of = format!("ims.v1.{REGION}.audit.as-of");
    for (body, code, says) in [
        (&b"{not json"[..], "invalid_argument", "as-of expects"),
        (
            &br#"{"tenant":"owner","query":"everything"}"#[..],
            "unknown_command",
            "unknown query \"everything\"",
        ),
        (
            &br#"{"tenant":"Owner!","query":"visible-images"}"#[..],
            "invalid_argument",
            "Owner!",
        ),
        (
            &br#"{"tenant":"owner","query":"visible-images","position":5,"at_ms":9}"#[..],
            "invalid_argument",
            "not both",
        ),
        (
            &br#"{"tenant":"owner","query":"visible-images","params":{"colour":1}}"#[..],
            "invalid_argument",
            "colour",
        ),
    ] {
        let message = auditor
            .request(as_of.clone(), bytes::Bytes::from_static(body))
            .await
            .unwrap();
        let answer: Value = ims_tests::serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    // A tenant may not ask at all: its permissions stop the request before the service.
    let tenant = service.client.tenant_connection("owner").await;
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tenant.request(
            subject,
            bytes::Bytes::from_static(br#"{"image_id":"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f"}"#),
        ),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "a tenant got an answer from audit.who-could-use"
    );
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tenant.request(
            as_of,
            bytes::Bytes::from_static(br#"{"tenant":"owner","query":"visible-images"}"#),
        ),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "a tenant got an answer from audit.as-of"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_row_of_a_read_model_is_named_by_verify_offline_and_online() {
    // Proves the read-model half of verify: a row changed behind the projector's back is found
    // and named by its key, whether the model is read from disk or through `audit.rows`.
    let mut service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "a"]).await;
    let image = ims.active_image("owner", json!({})).await;
    let reply = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["a"]}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let auditor = service.client.issue("auditor", None).await;
    let nats_url = service.nats.url();
    let online_verify = |token: &str, url: &str| {
        imsctl(&[
            "--token",
            token,
            "--nats-url",
            url,
            "--region",
            REGION,
            "--json",
            "audit",
            "verify",
        ])
    };
    let (code, out) = online_verify(&auditor, &nats_url);
    assert_eq!(code, 0, "online verify of intact models: {out}");
    service.stop().await;
    let region = RegionId::parse(REGION).unwrap();
    let model = ims_projector::projections_path(service.data_dir(), &region).join(
        ims_projection::snapshot::model_name::<ims_projection::Catalog>(),
    );
    let key = {
        let db = ims_log::open_sled(sled::Config::new().path(&model)).unwrap();
        let tree = db.open_tree("model").unwrap();
        // The image record: `i` and the id's 16 bytes.
        let id = uuid::Uuid::parse_str(&image).unwrap();
        let key = [&[b'i'][..], id.as_bytes()].concat();
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        tree.insert(&key, value).unwrap();
        db.flush().unwrap();
        key
    };
    let data_dir = service.data_dir().to_str().unwrap().to_owned();
    let (code, out) = imsctl(&[
        "--region",
        REGION,
        "--json",
        "audit",
        "--data-dir",
        &data_dir,
        "verify",
    ]);
    assert_eq!(code, 1, "offline verify of a changed model: {out}");
    let report: Value = ims_tests::serde_json::from_str(&out).unwrap();
    assert_eq!(report["chain"]["ok"], true, "{report}");
    assert_eq!(report["models"][0]["model"], "catalog", "{report}");
    assert_eq!(report["models"][0]["equal_to_rebuild"], false, "{report}");
    let named = report["models"][0]["first_difference"].as_str().unwrap();
    assert!(
        named.contains(&hex::encode(&key)) && named.contains("different value"),
        "{named}"
    );
    assert_eq!(report["models"][1]["equal_to_rebuild"], true, "{report}");
    // The service, started again on the changed model, serves it through audit.rows: the online
    // verify names the same row.
    service.restart().await;
    let (code, out) = online_verify(&auditor, &service.nats.url());
    assert_eq!(code, 1, "online verify of a changed model: {out}");
    let report: Value = ims_tests::serde_json::from_str(&out).unwrap();
    assert_eq!(report["models"][0]["first_difference"], named, "{report}");
}
