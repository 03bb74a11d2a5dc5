//! The command contract over a real NATS: every rule of DESIGN.md section 2 with its error code,
//! idempotent retries, optimistic concurrency, and garbage that must change nothing.

use ims_tests::serde_json::json;
use ims_tests::{code, Service, REGION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_rules_hold_over_nats_with_their_error_codes() {
    // Proves each sharing rule answers its stable code through the real service.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "friend"]).await;
    let image = ims.active_image("owner", json!({})).await;

    let members: Vec<String> = (0..129).map(|i| format!("m{i:03}")).collect();
    for member in &members {
        ims.register(&[member]).await;
    }
    let first_128: Vec<&String> = members[..128].iter().collect();
    let shared = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": first_128}),
        )
        .await;
    assert_eq!(shared["ok"], true, "{shared}");
    let refused = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": [members[128]]}),
        )
        .await;
    assert_eq!(code(&refused), "share_limit_exceeded", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("128"));

    let again = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["m000"]}),
        )
        .await;
    assert_eq!(again["ok"], true);
    assert_eq!(again["already_members"], json!(["m000"]));
    assert_eq!(
        again["position"], shared["position"],
        "nothing recorded, same position to wait for"
    );
    assert_eq!(again["version"], shared["version"]);

    let encrypted = ims
        .active_image("owner", json!({"encryption": {"kms_key_id": "kms-1"}}))
        .await;
    let reply = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": encrypted, "tenants": ["friend"]}),
        )
        .await;
    assert_eq!(code(&reply), "encrypted_not_shareable", "{reply}");
    let reply = ims
        .command(
            "owner",
            "copy-image",
            json!({"image_id": encrypted, "target_region": "other-1"}),
        )
        .await;
    assert_eq!(code(&reply), "encrypted_not_copyable", "{reply}");

    let full_ecs = ims.active_image("owner", json!({"disk": "full_ecs"})).await;
    let reply = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": full_ecs, "tenants": ["friend"]}),
        )
        .await;
    assert_eq!(code(&reply), "full_ecs_not_shareable", "{reply}");

    let reply = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": full_ecs, "tenants": ["stranger"]}),
        )
        .await;
    assert_eq!(code(&reply), "full_ecs_not_shareable");
    let plain = ims.active_image("owner", json!({})).await;
    let reply = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": plain, "tenants": ["stranger"]}),
        )
        .await;
    assert_eq!(code(&reply), "unknown_tenant", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stranger"));

    let reply = ims
        .command("friend", "delete-image", json!({"image_id": plain}))
        .await;
    assert_eq!(code(&reply), "forbidden", "{reply}");
    let reply = ims
        .command("friend", "accept-share", json!({"image_id": plain}))
        .await;
    assert_eq!(code(&reply), "not_a_member", "{reply}");

    let protected = ims.active_image("owner", json!({"protected": true})).await;
    let reply = ims
        .command("owner", "delete-image", json!({"image_id": protected}))
        .await;
    assert_eq!(code(&reply), "protected", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_public_image_rules_hold_over_nats() {
    // Proves quota_exceeded, not_shareable, invalid_state and not_found through the service.
    let service = Service::start().await;
    let ims = &service.client;
    let reply = ims
        .op("register-tenant", json!({"tenant": "small", "quota": 1}))
        .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(
        reply["version"], 1,
        "a tenant's version after its registration: {reply}"
    );
    ims.register(&["other"]).await;
    let first = ims.command("small", "create-image", json!({"name": "a", "disk": "data", "source": {"file": {"url": "obs://b/a.qcow2", "format": "qcow2"}}, "min_disk_gb": 10})).await;
    assert_eq!(first["ok"], true, "{first}");
    let second = ims.command("small", "create-image", json!({"name": "b", "disk": "data", "source": {"file": {"url": "obs://b/b.qcow2", "format": "qcow2"}}, "min_disk_gb": 10})).await;
    assert_eq!(code(&second), "quota_exceeded", "{second}");

    let queued = first["image_id"].as_str().unwrap();
    let reply = ims
        .command(
            "small",
            "share-image",
            json!({"image_id": queued, "tenants": ["other"]}),
        )
        .await;
    assert_eq!(code(&reply), "invalid_state", "{reply}");

    let public = ims.op("publish-public-image", json!({"name": "ubuntu-22.04", "disk": "system", "os": {"platform": "ubuntu", "version": "22.04", "arch": "x86_64"}, "min_disk_gb": 10, "size_bytes": 1, "checksum_sha256": "cd".repeat(32)})).await;
    assert_eq!(public["ok"], true, "{public}");
    let reply = ims
        .op("deprecate-image", json!({"image_id": public["image_id"]}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let reply = ims
        .command(
            "other",
            "delete-image",
            json!({"image_id": "0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f"}),
        )
        .await;
    assert_eq!(code(&reply), "not_found", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_command_id_appends_nothing_and_returns_the_first_reply() {
    // Proves exactly-once: the second send of a command id changes nothing, even after a restart.
    let mut service = Service::start().await;
    service.client.register(&["t1"]).await;
    let body = json!({"command_id": "0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f", "name": "web", "disk": "system",
        "source": {"ecs": {"instance_id": "ecs-1"}}, "os": {"platform": "debian", "version": "12", "arch": "x86_64"}, "min_disk_gb": 20});
    let first = service
        .client
        .command("t1", "create-image", body.clone())
        .await;
    assert_eq!(first["ok"], true, "{first}");
    let head = service.client.head().await;
    let second = service
        .client
        .command("t1", "create-image", body.clone())
        .await;
    assert_eq!(second["image_id"], first["image_id"]);
    assert_eq!(second["position"], first["position"]);
    assert_eq!(second["replayed"], true);
    assert_eq!(service.client.head().await, head);

    service.restart().await;
    let third = service.client.command("t1", "create-image", body).await;
    assert_eq!(third["image_id"], first["image_id"]);
    assert_eq!(service.client.head().await, head);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_writer_decides_on_the_same_images_and_quotas_as_before() {
    // Proves that lazily loaded state (images folded from their streams, tenants from their
    // snapshots) is the state the writer had: versions, members and quota counts carry over.
    let mut service = Service::start().await;
    let ims = service.client.clone();
    ims.register(&["owner", "a", "b"]).await;
    let quota = ims
        .op("set-quota", json!({"tenant": "owner", "quota": 2}))
        .await;
    assert_eq!(quota["ok"], true, "{quota}");
    let image = ims.active_image("owner", json!({})).await;
    let shared = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["a", "b"]}),
        )
        .await;
    assert_eq!(shared["ok"], true, "{shared}");
    let accepted = ims
        .command("a", "accept-share", json!({"image_id": image}))
        .await;
    assert_eq!(accepted["ok"], true, "{accepted}");
    let second = ims.active_image("owner", json!({})).await;
    let version = accepted["version"].as_u64().unwrap();

    service.restart().await;
    let ims = service.client.clone();
    let again = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["a", "b"]}),
        )
        .await;
    assert_eq!(again["already_members"], json!(["a", "b"]), "{again}");
    let stale = ims
        .command(
            "owner",
            "update-image",
            json!({"image_id": image, "expected_version": version - 1, "description": "x"}),
        )
        .await;
    assert_eq!(code(&stale), "conflict", "{stale}");
    let current = ims
        .command(
            "owner",
            "update-image",
            json!({"image_id": image, "expected_version": version, "description": "x"}),
        )
        .await;
    assert_eq!(current["version"], version + 1, "{current}");
    let over_quota = ims
        .command(
            "owner",
            "create-image",
            json!({"name": "third", "disk": "data", "min_disk_gb": 1,
            "source": {"file": {"url": "u", "format": "raw"}}}),
        )
        .await;
    assert_eq!(code(&over_quota), "quota_exceeded", "{over_quota}");
    let deleted = ims
        .command("owner", "delete-image", json!({"image_id": second}))
        .await;
    assert_eq!(deleted["ok"], true, "{deleted}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_version_gets_conflict() {
    // Proves optimistic concurrency: a command decided on an old version is refused.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let image = ims.active_image("t1", json!({})).await;
    let updated = ims
        .command(
            "t1",
            "update-image",
            json!({"image_id": image, "expected_version": 2, "description": "v3"}),
        )
        .await;
    assert_eq!(updated["ok"], true, "{updated}");
    assert_eq!(updated["version"], 3);
    let stale = ims
        .command(
            "t1",
            "update-image",
            json!({"image_id": image, "expected_version": 2, "description": "lost update"}),
        )
        .await;
    assert_eq!(code(&stale), "conflict", "{stale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_structured_error_and_leaves_the_log_unchanged() {
    // Proves that nothing from outside can panic the service or write half a command.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let head = ims.head().await;
    let prefix = format!("ims.v1.{}", ims.region);
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (format!("{prefix}.cmd.t1.create-image"), b"{\"name\": ".to_vec(), "invalid_json"),
        (format!("{prefix}.cmd.t1.create-image"), b"[1,2,3]".to_vec(), "invalid_argument"),
        (format!("{prefix}.cmd.t1.set-quota"), br#"{"tenant":"t1","quota":"lots"}"#.to_vec(), "invalid_argument"),
        (format!("{prefix}.cmd.t1.create-image"), br#"{"name":"x","disk":"floppy","source":{},"min_disk_gb":1}"#.to_vec(), "invalid_argument"),
        (format!("{prefix}.cmd.t1.format-everything"), b"{}".to_vec(), "unknown_command"),
        (format!("{prefix}.cmd.t1.create-image"), vec![b' '; 70 * 1024], "payload_too_large"),
        (format!("{prefix}.cmd.t1.share-image"), br#"{"image_id":"nope","tenants":["t2"]}"#.to_vec(), "invalid_argument"),
        (format!("{prefix}.cmd.t1.register-tenant"), br#"{"tenant":"t9"}"#.to_vec(), "forbidden"),
        (format!("{prefix}.op.create-image"), br#"{"name":"x","disk":"data","source":{"file":{"url":"u","format":"raw"}},"min_disk_gb":1}"#.to_vec(), "forbidden"),
    ];
    for (subject, payload, expected) in cases {
        let reply = ims.request(subject.clone(), payload).await;
        assert_eq!(reply["ok"], false, "{subject}: {reply}");
        assert_eq!(code(&reply), expected, "{subject}: {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    }
    // No credential can publish under a tenant token that is not a tenant id, but the service
    // still checks the token itself (defence in depth): sent on the service's own connection.
    let service_side =
        ims_tests::Client::connect_as_service(&service.nats.url(), REGION, service.data_dir())
            .await;
    let reply = service_side
        .request(
            format!("{prefix}.cmd.T1_UPPER.create-image"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(code(&reply), "invalid_argument", "{reply}");
    assert_eq!(ims.head().await, head, "a refused command wrote to the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sizes_and_prices_are_refused_end_to_end_and_nothing_is_written() {
    // Proves the two reported scenarios are closed: a 60,000-character instance id, and a price
    // of 2^64-1 whose usage totals would wrap.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1", "t2"]).await;
    let image = ims.active_image("t1", json!({})).await;
    let head = ims.head().await;
    for _ in 0..3 {
        let reply = ims
            .command(
                "t1",
                "create-image",
                json!({"name": "x", "disk": "data", "min_disk_gb": 1,
                       "source": {"ecs": {"instance_id": "i".repeat(60_000), "data_disk_ids": []}}}),
            )
            .await;
        assert_eq!(code(&reply), "invalid_argument", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("source.ecs.instance_id") && message.contains("128"),
            "{message}"
        );
        assert!(
            message.len() < 300,
            "the refusal repeats the value: {} bytes",
            message.len()
        );
    }
    let listed = ims
        .command(
            "t1",
            "list-on-marketplace",
            json!({"image_id": image, "publisher": "Acme",
                   "price": {"model": "per_hour", "amount_minor": u64::MAX, "currency": "USD"}}),
        )
        .await;
    assert_eq!(code(&listed), "invalid_argument", "{listed}");
    assert_eq!(ims.head().await, head, "a refused command was written");
    let listed = ims
        .command(
            "t1",
            "list-on-marketplace",
            json!({"image_id": image, "publisher": "Acme",
                   "price": {"model": "per_hour", "amount_minor": 1_000_000_000u64, "currency": "USD"}}),
        )
        .await;
    assert_eq!(listed["ok"], true, "{listed}");
    let too_long = ims
        .op(
            "record-usage",
            json!({"image_id": image, "tenant": "t2", "hours": 1_000_000}),
        )
        .await;
    assert_eq!(code(&too_long), "invalid_argument", "{too_long}");
    let mut at = 0;
    for _ in 0..2 {
        let used = ims
            .op(
                "record-usage",
                json!({"image_id": image, "tenant": "t2", "hours": 8784}),
            )
            .await;
        assert_eq!(used["ok"], true, "{used}");
        at = used["position"].as_u64().unwrap();
    }
    let usage = ims.query_at("t2", "usage", json!({}), at).await;
    assert_eq!(
        usage["totals_minor"]["USD"],
        json!(2 * 8784 * 1_000_000_000u64),
        "{usage}"
    );
}
