//! The read side end to end: what each tenant sees over NATS and HTTP, read-your-writes, feeds.

use ims_tests::serde_json::{json, Value};
use ims_tests::{code, http_get, http_get_with, Service, REGION};

fn position(reply: &Value) -> u64 {
    reply["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("no position in {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_public_own_accepted_and_marketplace_images_and_nothing_else() {
    // Proves the visibility rules of sections 2 and 5 through the live projection.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["alice", "bob", "carol"]).await;
    let public = ims.op("publish-public-image", json!({"name": "ubuntu", "disk": "system", "os": {"platform": "ubuntu", "version": "22.04", "arch": "x86_64"}, "min_disk_gb": 10, "size_bytes": 1, "checksum_sha256": "ab".repeat(32)})).await;
    let public = public["image_id"].as_str().unwrap().to_owned();
    let bobs_private = ims
        .active_image("bob", json!({"name": "bob-private"}))
        .await;
    let accepted = ims.active_image("bob", json!({"name": "accepted"})).await;
    let pending = ims.active_image("bob", json!({"name": "pending"})).await;
    let rejected = ims.active_image("bob", json!({"name": "rejected"})).await;
    let market = ims.active_image("carol", json!({"name": "market"})).await;
    let alices = ims.active_image("alice", json!({"name": "mine"})).await;
    for image in [&accepted, &pending, &rejected] {
        let reply = ims
            .command(
                "bob",
                "share-image",
                json!({"image_id": image, "tenants": ["alice"]}),
            )
            .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    ims.command("alice", "accept-share", json!({"image_id": accepted}))
        .await;
    ims.command("alice", "reject-share", json!({"image_id": rejected}))
        .await;
    let last = ims.command("carol", "list-on-marketplace", json!({"image_id": market, "publisher": "Carol Ltd", "price": {"model": "per_hour", "amount_minor": 50, "currency": "EUR"}})).await;
    let seen = ims.visible_ids("alice", position(&last)).await;
    let mut expected = vec![
        public.clone(),
        accepted.clone(),
        market.clone(),
        alices.clone(),
    ];
    expected.sort();
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    assert_eq!(
        seen_sorted, expected,
        "alice sees exactly public, accepted, Marketplace and her own"
    );
    let reply = ims
        .query("alice", "image", json!({"image_id": bobs_private}))
        .await;
    assert_eq!(
        code(&reply),
        "not_found",
        "another tenant's private image stays hidden: {reply}"
    );
    // A member may look at an image offered to it (to decide), but it is not in its image list.
    let offered = ims
        .query("alice", "image", json!({"image_id": pending}))
        .await;
    assert_eq!(offered["member_status"], "pending", "{offered}");
    let inbox = ims
        .query("alice", "shared-with-me", json!({"status": "pending"}))
        .await;
    assert_eq!(inbox["items"][0]["id"], json!(pending), "{inbox}");
    let typed = ims
        .query("alice", "visible-images", json!({"type": "shared"}))
        .await;
    assert_eq!(typed["items"].as_array().unwrap().len(), 1);
    assert_eq!(typed["items"][0]["type"], "shared");
    let usable = ims
        .query(
            "alice",
            "usable",
            json!({"image_id": market, "purpose": "create_ecs"}),
        )
        .await;
    assert_eq!(usable["allowed"], true, "{usable}");
    assert_eq!(usable["price"]["amount_minor"], 50);
    let member_counts = ims.query("alice", "share-counts", json!({})).await;
    assert!(
        member_counts["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["image_id"] != json!(accepted)),
        "share counts list the tenant's own images, not those shared with it: {member_counts}"
    );
    let counts = ims.query("bob", "share-counts", json!({})).await;
    let accepted_counts = counts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["image_id"] == json!(accepted))
        .unwrap();
    assert_eq!(
        (
            accepted_counts["accepted"].as_u64(),
            accepted_counts["limit"].as_u64()
        ),
        (Some(1), Some(128))
    );

    // Stopping a share and deleting an image take them out of alice's list and into her feed.
    ims.command(
        "bob",
        "unshare-image",
        json!({"image_id": accepted, "all": true}),
    )
    .await;
    let deleted = ims
        .command("bob", "delete-image", json!({"image_id": pending}))
        .await;
    let seen = ims.visible_ids("alice", position(&deleted)).await;
    assert!(!seen.contains(&accepted) && !seen.contains(&pending));
    let feed = ims.query("alice", "feed", json!({})).await;
    let kinds: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"share_revoked")
            && kinds.contains(&"shared_image_deleted")
            && kinds.contains(&"share_offered"),
        "{feed}"
    );
    // The deleted image is in bob's recycle bin, which only bob sees.
    let recycled = ims
        .query("bob", "image", json!({"image_id": pending}))
        .await;
    assert_eq!(recycled["status"], "recycled", "{recycled}");
    assert!(recycled["purge_at"].is_string(), "{recycled}");
    let gone = ims
        .query("alice", "image", json!({"image_id": pending}))
        .await;
    assert_eq!(code(&gone), "not_found", "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_min_position_reads_the_write_and_an_unreachable_one_is_stale() {
    // Proves read-your-writes: the answer includes the command, or says stale.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let image = ims.active_image("t1", json!({})).await;
    let updated = ims
        .command(
            "t1",
            "update-image",
            json!({"image_id": image, "name": "renamed"}),
        )
        .await;
    let view = ims
        .query_at(
            "t1",
            "image",
            json!({"image_id": image}),
            position(&updated),
        )
        .await;
    assert_eq!(view["name"], "renamed", "{view}");
    let stale = ims
        .query_at(
            "t1",
            "image",
            json!({"image_id": image}),
            position(&updated) + 1000,
        )
        .await;
    assert_eq!(code(&stale), "stale", "{stale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_queries_health_readiness_and_metrics() {
    // Proves the HTTP API against a real server, with the same codes as NATS.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1", "t2"]).await;
    let image = ims.active_image("t1", json!({})).await;
    let shared = ims
        .command(
            "t1",
            "share-image",
            json!({"image_id": image, "tenants": ["t2"]}),
        )
        .await;
    let at = position(&shared);
    let addr = service.http_addr;
    let t1 = ims.issue("tenant", Some("t1")).await;
    let t2 = ims.issue("tenant", Some("t2")).await;
    let (status, page) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t1/images?min_position={at}"),
        Some(&t1),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["id"], json!(image));
    let (status, members) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t1/images/{image}/members"),
        Some(&t1),
    )
    .await;
    assert_eq!(
        (status, members["items"][0]["status"].as_str()),
        (200, Some("pending")),
        "{members}"
    );
    let (status, body) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t2/images/{image}/members"),
        Some(&t2),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t2/images/0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f"),
        Some(&t2),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t1/images?limit=5000"),
        Some(&t1),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_argument"));
    assert!(body["error"]["message"].as_str().unwrap().contains("5000"));
    let (status, body) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t1/images?colour=red"),
        Some(&t1),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_get_with(
        addr,
        &format!("/v1/{REGION}/tenants/t1/images/{image}/usable?purpose=create_evs"),
        Some(&t1),
    )
    .await;
    assert_eq!(
        (status, body["allowed"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let (status, history) = http_get_with(
        addr,
        &format!("/v1/{REGION}/images/{image}/history"),
        Some(&t1),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        history["items"].as_array().unwrap().len(),
        3,
        "created, built, shared: {history}"
    );
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("ims_commands_total") && metrics.contains("ims_projection_position"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_a_live_credential_and_the_right_tenant() {
    // Proves the HTTP trust boundary: 401 without a live credential, 403 for another tenant's
    // path, 200 for the tenant itself, operators and auditors, and history only for its owner.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1", "t2"]).await;
    let image = ims.active_image("t1", json!({})).await;
    let shared = ims
        .command(
            "t1",
            "share-image",
            json!({"image_id": image, "tenants": ["t2"]}),
        )
        .await;
    let at = position(&shared);
    let [t1, t2, operator, auditor, revoked] = [
        ims.issue("tenant", Some("t1")).await,
        ims.issue("tenant", Some("t2")).await,
        ims.issue("operator", None).await,
        ims.issue("auditor", None).await,
        ims.issue("tenant", Some("t1")).await,
    ];
    let revoked_key = revoked.split('_').nth(1).unwrap().to_owned();
    let reply = ims
        .request_on(
            &ims.nats,
            ims.subjects.iam("revoke-credential"),
            ims_tests::serde_json::to_vec(&json!({"key_id": revoked_key})).unwrap(),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let malformed = "ims_nope";
    let unknown = format!("ims_0123456789abcdef_{}", "0".repeat(64));
    let tenant_routes = [
        format!("/v1/{REGION}/tenants/t1/images?min_position={at}"),
        format!("/v1/{REGION}/tenants/t1/shared-with-me"),
        format!("/v1/{REGION}/tenants/t1/share-counts"),
        format!("/v1/{REGION}/tenants/t1/feed"),
        format!("/v1/{REGION}/tenants/t1/usage"),
        format!("/v1/{REGION}/tenants/t1/images/{image}"),
        format!("/v1/{REGION}/tenants/t1/images/{image}/members"),
        format!("/v1/{REGION}/tenants/t1/images/{image}/usable"),
    ];
    let history = format!("/v1/{REGION}/images/{image}/history");
    for route in tenant_routes.iter().chain([&history]) {
        let (status, body) = http_get(service.http_addr, route).await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthenticated"),
            "{route}: {body}"
        );
        for bad in [malformed, unknown.as_str(), revoked.as_str()] {
            let (status, body) = service.http_get_as(bad, route).await;
            assert_eq!(status, 401, "{route} with a bad token: {body}");
        }
        for good in [&t1, &operator, &auditor] {
            let (status, body) = service.http_get_as(good, route).await;
            assert_eq!(status, 200, "{route}: {body}");
        }
    }
    for route in &tenant_routes {
        let (status, body) = service.http_get_as(&t2, route).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{route}: {body}");
    }
    // Another tenant's image history answers as if there were none: it reveals nothing.
    let (status, body) = service.http_get_as(&t2, &history).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // The secret never appears in what the service answers or exports.
    let (_, listed) = service.http_get_as(&auditor, &tenant_routes[0]).await;
    assert!(!listed.to_string().contains(&t1[21..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_tenant_may_not_see_answers_as_if_it_did_not_exist() {
    // Proves `image` and `usable` reveal nothing of another tenant's private image, and that
    // source details (instance ids, file URLs) reach its owner only.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "member", "stranger"]).await;
    let image = ims
        .active_image(
            "owner",
            json!({"source": {"ecs": {"instance_id": "ecs-secret-42", "data_disk_ids": []}}}),
        )
        .await;
    let shared = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "tenants": ["member"]}),
        )
        .await;
    let at = position(&shared);
    let missing = "0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f";
    for query in ["image", "usable"] {
        let hidden = ims
            .query_at("stranger", query, json!({"image_id": image}), at)
            .await;
        let absent = ims
            .query_at("stranger", query, json!({"image_id": missing}), at)
            .await;
        assert_eq!(
            (code(&hidden), code(&absent)),
            ("not_found", "not_found"),
            "{hidden}"
        );
        assert_eq!(
            hidden["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&image, "ID"),
            absent["error"]["message"]
                .as_str()
                .unwrap()
                .replace(missing, "ID"),
            "the refusals tell the two apart"
        );
    }
    let as_member = ims
        .query_at("member", "image", json!({"image_id": image}), at)
        .await;
    assert_eq!(as_member["source"], json!({"ecs": {}}), "{as_member}");
    let as_owner = ims
        .query_at("owner", "image", json!({"image_id": image}), at)
        .await;
    assert_eq!(as_owner["source"]["ecs"]["instance_id"], "ecs-secret-42");
    // A pending member is still told why it may not use the image yet.
    let usable = ims
        .query_at("member", "usable", json!({"image_id": image}), at)
        .await;
    assert_eq!(usable["allowed"], false, "{usable}");
    assert!(
        usable["reason"].as_str().unwrap_or("").contains("accept"),
        "{usable}"
    );
}

/// The series of a Prometheus page: its sample lines without their values.
fn series(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(name, _)| name.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unknown_query_names_add_no_metric_series() {
    // Proves metric labels come only from known names: the page keeps its series.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let unknown = ims.query("t1", "no-such-query", json!({})).await;
    assert_eq!(code(&unknown), "unknown_command", "{unknown}");
    let (_, before) = http_get(service.http_addr, "/metrics").await;
    let before = series(before.as_str().unwrap());
    for n in 0..1000 {
        let reply = ims
            .query(
                "t1",
                &format!("q{n}-{}", uuid::Uuid::now_v7().simple()),
                json!({}),
            )
            .await;
        assert_eq!(code(&reply), "unknown_command", "{reply}");
    }
    let (_, after) = http_get(service.http_addr, "/metrics").await;
    let after = series(after.as_str().unwrap());
    assert_eq!(
        before,
        after,
        "new series: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_lists_exactly_the_owners_images_not_launched_over_nats_and_http() {
    // Proves last-launched end to end: the compute service's record-launch sets
    // last_launched_at, and unused-images lists exactly the owner's images nobody launched.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "other"]).await;
    let launched = ims.active_image("owner", json!({})).await;
    let idle = ims.active_image("owner", json!({})).await;
    let theirs = ims.active_image("other", json!({})).await;
    let reply = ims
        .op(
            "record-launch",
            json!({"image_id": launched, "tenant": "owner"}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let at = position(&reply);
    // A tenant that may not use the image cannot have launched from it: refused by name.
    let refused = ims
        .op(
            "record-launch",
            json!({"image_id": theirs, "tenant": "owner"}),
        )
        .await;
    assert_eq!(code(&refused), "forbidden", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("owner"));
    let unused = ims
        .query_at("owner", "unused-images", json!({"days": 30}), at)
        .await;
    let ids: Vec<&str> = unused["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![idle.as_str()], "{unused}");
    let image = ims
        .query_at("owner", "image", json!({"image_id": launched}), at)
        .await;
    assert!(
        image["last_launched_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{image}"
    );
    // Bad days are refused naming what is accepted.
    for (body, says) in [
        (json!({}), "needs days"),
        (json!({"days": 0}), "1 to 3650"),
        (json!({"days": 4000}), "1 to 3650"),
    ] {
        let answer = ims.query("owner", "unused-images", body).await;
        assert_eq!(code(&answer), "invalid_argument", "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let token = ims.issue("tenant", Some("owner")).await;
    let (status, page) = http_get_with(
        service.http_addr,
        &format!("/v1/{REGION}/tenants/owner/unused-images?days=30&min_position={at}"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["id"], json!(idle), "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}
