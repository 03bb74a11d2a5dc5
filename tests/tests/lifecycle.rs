//! The image lifecycle beyond the seed (DESIGN.md section 13), end to end over NATS: deprecation
//! states and the scheduler that carries out timed transitions once, across restarts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ims_tests::serde_json::{json, Value};
use ims_tests::{code, Client, Service, REGION};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn in_ms(ms: u64) -> String {
    ims_wire::time::rfc3339(now_ms() + ms)
}

fn position(reply: &Value) -> u64 {
    reply["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("{reply}"))
}

/// `owner` shares `image` with `member`, who accepts it.
async fn share_accepted(ims: &Client, owner: &str, image: &str, member: &str) -> u64 {
    let shared = ims
        .command(
            owner,
            "share-image",
            json!({"image_id": image, "tenants": [member]}),
        )
        .await;
    assert_eq!(shared["ok"], true, "{shared}");
    let accepted = ims
        .command(member, "accept-share", json!({"image_id": image}))
        .await;
    assert_eq!(accepted["ok"], true, "{accepted}");
    position(&accepted)
}

async fn usable(ims: &Client, tenant: &str, image: &str, at: u64) -> Value {
    ims.query_at(
        tenant,
        "usable",
        json!({"image_id": image, "purpose": "create_ecs"}),
        at,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprecated_image_is_hidden_and_still_usable_and_an_obsolete_one_is_refused_naming_the_replacement(
) {
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "member"]).await;
    let old = ims.active_image("owner", json!({})).await;
    let new = ims.active_image("owner", json!({})).await;
    share_accepted(ims, "owner", &old, "member").await;
    // The replacement must be visible to the member first: refused by name until it is.
    let refused = ims
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": old, "state": "deprecated", "replacement": new}),
        )
        .await;
    assert_eq!(code(&refused), "invalid_argument", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tenant member"));
    share_accepted(ims, "owner", &new, "member").await;
    let deprecated = ims
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": old, "state": "deprecated", "replacement": new}),
        )
        .await;
    assert_eq!(deprecated["ok"], true, "{deprecated}");
    let at = position(&deprecated);

    let visible = ims.visible_ids("member", at).await;
    assert!(
        !visible.contains(&old) && visible.contains(&new),
        "{visible:?}"
    );
    let all = ims
        .query_at(
            "member",
            "visible-images",
            json!({"include_deprecated": true}),
            at,
        )
        .await;
    assert!(all.to_string().contains(&old), "{all}");
    let answer = usable(ims, "member", &old, at).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(
        answer["warning"].as_str().unwrap().contains(&new),
        "{answer}"
    );
    let view = ims
        .query_at("owner", "image", json!({"image_id": old}), at)
        .await;
    assert_eq!(view["deprecated"], true, "{view}");
    assert_eq!(view["deprecation"]["state"], "deprecated", "{view}");
    assert_eq!(view["deprecation"]["replacement"], json!(new), "{view}");

    let obsolete = ims
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": old, "state": "obsolete", "replacement": new}),
        )
        .await;
    assert_eq!(obsolete["ok"], true, "{obsolete}");
    let at = position(&obsolete);
    let answer = usable(ims, "member", &old, at).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("obsolete") && reason.contains(&new),
        "{answer}"
    );
    let feed = ims.query_at("member", "feed", json!({}), at).await;
    let kinds: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"image_deprecated") && kinds.contains(&"image_obsolete"),
        "{feed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecate_image_refuses_bad_states_times_and_senders_by_name() {
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "other"]).await;
    let image = ims.active_image("owner", json!({})).await;
    for (body, wanted, says) in [
        (
            json!({"image_id": image, "state": "retired"}),
            "invalid_argument",
            "retired",
        ),
        (
            json!({"image_id": image, "state": "deprecated", "deprecated": true}),
            "invalid_argument",
            "not both",
        ),
        (
            json!({"image_id": image, "obsolete_at": "next tuesday"}),
            "invalid_argument",
            "obsolete_at",
        ),
        (
            json!({"image_id": image, "delete_at": "2001-01-01T00:00:00Z"}),
            "invalid_argument",
            "delete_at 2001-01-01",
        ),
        (
            json!({"image_id": image, "obsolete_at": in_ms(7_200_000), "delete_at": in_ms(3_600_000)}),
            "invalid_argument",
            "comes before obsolete_at",
        ),
        (
            json!({"image_id": image, "replacement": "not-a-uuid"}),
            "invalid_argument",
            "not-a-uuid",
        ),
    ] {
        let reply = ims.command("owner", "deprecate-image", body).await;
        assert_eq!(code(&reply), wanted, "{reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(says),
            "{reply} should name {says}"
        );
    }
    let theirs = ims
        .command("other", "deprecate-image", json!({"image_id": image}))
        .await;
    assert_eq!(code(&theirs), "forbidden", "{theirs}");
    let operator = ims.op("deprecate-image", json!({"image_id": image})).await;
    assert_eq!(code(&operator), "forbidden", "{operator}");
}

/// The image's view as its owner sees it, at the log's head.
async fn owner_view(ims: &Client, image: &str) -> Value {
    let head = ims.head().await;
    ims.query_at("owner", "image", json!({"image_id": image}), head)
        .await
}

/// Waits up to `within` for the owner's view of `image` to satisfy `done`.
async fn wait_for(
    ims: &Client,
    image: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let view = owner_view(ims, image).await;
        if done(&view) || started.elapsed() > within {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The image's events in the log, as (type, actor).
async fn events_of(ims: &Client, image: &str) -> Vec<(String, String)> {
    let stream = format!("image/{image}");
    ims.read_log(1, 10_000)
        .await
        .envelopes
        .into_iter()
        .filter(|envelope| envelope.body.stream == stream)
        .map(|envelope| (envelope.body.event_type, envelope.body.actor))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_transitions_are_carried_out_once_at_their_moment_across_a_restart() {
    // Proves the scheduler: obsolete_at passes while imsd is down and is carried out when it is
    // back; delete_at passes while it runs (into the recycle bin). Each is recorded exactly
    // once, by actor scheduler.
    let mut service = Service::start().await;
    service.client.register(&["owner"]).await;
    let image = service.client.active_image("owner", json!({})).await;
    let scheduled = service
        .client
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": image, "obsolete_at": in_ms(1_500), "delete_at": in_ms(4_500)}),
        )
        .await;
    assert_eq!(scheduled["ok"], true, "{scheduled}");
    let view = owner_view(&service.client, &image).await;
    assert_eq!(view["deprecation"]["state"], "deprecated", "{view}");
    assert!(view["deprecation"]["obsolete_at"].is_string(), "{view}");
    service.stop().await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    service.restart().await;
    let ims = &service.client;
    let view = wait_for(ims, &image, Duration::from_secs(10), |view| {
        view["deprecation"]["state"] == "obsolete"
    })
    .await;
    assert_eq!(view["deprecation"]["state"], "obsolete", "{view}");
    assert!(view["deprecation"]["obsolete_at"].is_null(), "{view}");
    assert!(view["deprecation"]["delete_at"].is_string(), "{view}");
    // A tenant's image deleted on schedule goes to its recycle bin, as its owner's delete does.
    let view = wait_for(ims, &image, Duration::from_secs(10), |view| {
        view["status"] == "recycled"
    })
    .await;
    assert_eq!(view["status"], "recycled", "{view}");
    // One more tick for a repeat to show, if there were one.
    tokio::time::sleep(ims_scheduler::TICK * 4).await;
    let by_scheduler: Vec<String> = events_of(ims, &image)
        .await
        .into_iter()
        .filter(|(_, actor)| actor == "scheduler")
        .map(|(event_type, _)| event_type)
        .collect();
    assert_eq!(by_scheduler, vec!["deprecation_set", "image_recycled"]);
}

/// The ids of a list answer's items.
fn ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recycle_bin_restores_with_members_and_purges_after_the_retention() {
    // Retention days of a second, so that a purge comes within the test.
    let service = Service::start_configured(ims_cli::runtime::Roles::ALL, &[REGION], |config| {
        config.policy.retention_day_ms = 1_000;
    })
    .await;
    let ims = &service.client;
    ims.register(&["owner", "member"]).await;
    let image = ims.active_image("owner", json!({})).await;
    share_accepted(ims, "owner", &image, "member").await;
    let recycled = ims
        .command("owner", "delete-image", json!({"image_id": image}))
        .await;
    assert_eq!(recycled["ok"], true, "{recycled}");
    let at = position(&recycled);
    assert!(!ims.visible_ids("member", at).await.contains(&image));
    let hidden = ims
        .query_at("member", "image", json!({"image_id": image}), at)
        .await;
    assert_eq!(code(&hidden), "not_found", "{hidden}");
    let bin = ims.query_at("owner", "recycle-bin", json!({}), at).await;
    assert_eq!(ids(&bin), vec![image.clone()], "{bin}");
    assert!(bin["items"][0]["purge_at"].is_string(), "{bin}");
    let token = ims.issue("tenant", Some("owner")).await;
    let (status, page) = ims_tests::http_get_with(
        service.http_addr,
        &format!("/v1/{REGION}/tenants/owner/recycle-bin?min_position={at}"),
        Some(&token),
    )
    .await;
    assert_eq!((status, ids(&page)), (200, vec![image.clone()]), "{page}");
    // Only the owner restores, and only what is in the bin.
    let theirs = ims
        .command("member", "restore-image", json!({"image_id": image}))
        .await;
    assert_eq!(code(&theirs), "not_found", "{theirs}");

    let restored = ims
        .command("owner", "restore-image", json!({"image_id": image}))
        .await;
    assert_eq!(restored["ok"], true, "{restored}");
    let at = position(&restored);
    assert!(ims.visible_ids("member", at).await.contains(&image));
    let member_view = ims
        .query_at("member", "image", json!({"image_id": image}), at)
        .await;
    assert_eq!(member_view["member_status"], "accepted", "{member_view}");
    let again = ims
        .command("owner", "restore-image", json!({"image_id": image}))
        .await;
    assert_eq!(code(&again), "invalid_state", "{again}");
    let feed = ims.query_at("member", "feed", json!({}), at).await;
    assert!(feed.to_string().contains("shared_image_restored"), "{feed}");

    for (days, wanted) in [(0, "invalid_argument"), (366, "invalid_argument"), (2, "")] {
        let reply = ims
            .op("set-retention", json!({"tenant": "owner", "days": days}))
            .await;
        assert_eq!(code(&reply), wanted, "{reply}");
    }
    let recycled = ims
        .command("owner", "delete-image", json!({"image_id": image}))
        .await;
    assert_eq!(recycled["ok"], true, "{recycled}");
    let view = wait_for(ims, &image, Duration::from_secs(15), |view| {
        view["status"] == "deleted" || code(view) == "not_found"
    })
    .await;
    assert!(
        view["status"] == "deleted" || code(&view) == "not_found",
        "not purged after its retention of 2 s: {view}"
    );
    let head = ims.head().await;
    let bin = ims.query_at("owner", "recycle-bin", json!({}), head).await;
    assert!(ids(&bin).is_empty(), "{bin}");
    let purged_by: Vec<(String, String)> = events_of(ims, &image)
        .await
        .into_iter()
        .filter(|(event_type, _)| event_type == "image_deleted")
        .collect();
    assert_eq!(
        purged_by,
        vec![("image_deleted".to_owned(), "scheduler".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_right_after_a_transition_does_not_repeat_it() {
    // The failpoint aborts imsd once the transition is in the log and before the scheduler
    // records it done: the restarted scheduler must not record it twice.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let imsd = |failpoints: &str| {
        ims_tests::spawn_imsd_with_env(
            env!("CARGO_BIN_EXE_imsd-under-test"),
            "run",
            &nats.url(),
            data.path(),
            REGION,
            &[("IMS_FAILPOINTS", failpoints)],
        )
    };
    let mut first = imsd("scheduler-abort-after=1");
    let ims = Client::connect(&nats.url(), REGION, data.path()).await;
    ims.wait_ready().await;
    ims.register(&["owner"]).await;
    let image = ims.active_image("owner", json!({})).await;
    let scheduled = ims
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": image, "obsolete_at": in_ms(1_000)}),
        )
        .await;
    assert_eq!(scheduled["ok"], true, "{scheduled}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the failpoint never fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status:?}");
    let _second = imsd("");
    ims.wait_ready().await;
    let view = wait_for(&ims, &image, Duration::from_secs(10), |view| {
        view["deprecation"]["state"] == "obsolete"
    })
    .await;
    assert_eq!(view["deprecation"]["state"], "obsolete", "{view}");
    tokio::time::sleep(ims_scheduler::TICK * 4).await;
    let transitions = events_of(&ims, &image)
        .await
        .into_iter()
        .filter(|(_, actor)| actor == "scheduler")
        .count();
    assert_eq!(transitions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_answers_the_newest_usable_image_of_a_family_skipping_deprecated_excluded_and_unusable(
) {
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "member"]).await;
    let in_family = |extra: Value| {
        let mut body = json!({"family": "web"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let first = ims.active_image("owner", in_family(json!({}))).await;
    let second = ims.active_image("owner", in_family(json!({}))).await;
    let candidate = ims
        .active_image("owner", in_family(json!({"exclude_from_latest": true})))
        .await;
    // Newest of all, but never built: not usable.
    let unbuilt = ims
        .command(
            "owner",
            "create-image",
            in_family(
                json!({"name": "web-next", "disk": "system", "min_disk_gb": 40,
                "source": {"ecs": {"instance_id": "ecs-9", "data_disk_ids": []}},
                "os": {"platform": "ubuntu", "version": "24.04", "arch": "x86_64"}}),
            ),
        )
        .await;
    assert_eq!(unbuilt["ok"], true, "{unbuilt}");
    let latest = |tenant: &'static str| async move {
        let head = ims.head().await;
        ims.query_at(tenant, "latest", json!({"family": "web"}), head)
            .await
    };
    let answer = latest("owner").await;
    assert_eq!(answer["id"], json!(second), "{answer}");
    assert_ne!(answer["id"], json!(candidate));
    let view = ims
        .query("owner", "image", json!({"image_id": candidate}))
        .await;
    assert_eq!(
        (
            view["family"].as_str(),
            view["exclude_from_latest"].as_bool()
        ),
        (Some("web"), Some(true)),
        "{view}"
    );
    let deprecated = ims
        .command(
            "owner",
            "deprecate-image",
            json!({"image_id": second, "replacement": first}),
        )
        .await;
    assert_eq!(deprecated["ok"], true, "{deprecated}");
    assert_eq!(latest("owner").await["id"], json!(first));
    // Another tenant may use none of them until one is shared with it and accepted.
    let none = latest("member").await;
    assert_eq!(code(&none), "not_found", "{none}");
    assert!(none["error"]["message"]
        .as_str()
        .unwrap()
        .contains("family web"));
    share_accepted(ims, "owner", &first, "member").await;
    assert_eq!(latest("member").await["id"], json!(first));
    let token = ims.issue("tenant", Some("member")).await;
    let head = ims.head().await;
    let (status, page) = ims_tests::http_get_with(
        service.http_addr,
        &format!("/v1/{REGION}/tenants/member/families/web/latest?min_position={head}"),
        Some(&token),
    )
    .await;
    assert_eq!((status, &page["id"]), (200, &json!(first)), "{page}");
    let bad = ims
        .query("owner", "latest", json!({"family": "Web Servers"}))
        .await;
    assert_eq!(code(&bad), "invalid_argument", "{bad}");
    let missing = ims.query("owner", "latest", json!({})).await;
    assert_eq!(code(&missing), "invalid_argument", "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_share_reaches_its_tenants_present_and_future_and_counts_once() {
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "outsider"]).await;
    let joined = ims
        .op(
            "register-tenant",
            json!({"tenant": "early", "organization": "acme-group"}),
        )
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    let image = ims.active_image("owner", json!({"family": "web"})).await;
    let shared = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": image, "organizations": ["acme-group"]}),
        )
        .await;
    assert_eq!(shared["ok"], true, "{shared}");
    // A tenant registered in the organization after the share sees it too, without accepting.
    let late = ims
        .op(
            "register-tenant",
            json!({"tenant": "late", "organization": "acme-group"}),
        )
        .await;
    assert_eq!(late["ok"], true, "{late}");
    let at = position(&late);
    for tenant in ["early", "late"] {
        assert!(
            ims.visible_ids(tenant, at).await.contains(&image),
            "{tenant} does not see it"
        );
        let answer = usable(ims, tenant, &image, at).await;
        assert_eq!(answer["allowed"], true, "{answer}");
        assert_eq!(answer["access"], "organization_share", "{answer}");
        let latest = ims
            .query_at(tenant, "latest", json!({"family": "web"}), at)
            .await;
        assert_eq!(latest["id"], json!(image), "{latest}");
    }
    let offered = ims.query_at("late", "shared-with-me", json!({}), at).await;
    assert_eq!(ids(&offered), vec![image.clone()], "{offered}");
    assert!(!ims.visible_ids("outsider", at).await.contains(&image));
    // The owner sees the organization among the members, counted once.
    let members = ims
        .query_at("owner", "members", json!({"image_id": image}), at)
        .await;
    assert_eq!(
        members["items"],
        json!([{"organization": "acme-group", "status": "accepted"}]),
        "{members}"
    );
    let counts = ims.query_at("owner", "share-counts", json!({}), at).await;
    assert_eq!(
        (
            counts["items"][0]["organizations"].as_u64(),
            counts["items"][0]["total"].as_u64()
        ),
        (Some(1), Some(1)),
        "{counts}"
    );
    // Auditors see both tenants reach it through the organization.
    let auditor = ims.auditor_connection().await;
    let region = ims_domain::RegionId::parse(REGION).unwrap();
    let who = ims_audit::who_could_use_online(
        &auditor,
        &Default::default(),
        &region,
        ims_domain::ImageId::parse(&image).unwrap(),
        ims_audit::Until::Position(at),
    )
    .await
    .unwrap();
    let through: Vec<(String, String)> = who["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_owned(),
                t["through"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        through,
        vec![
            ("early".to_owned(), "organization_share".to_owned()),
            ("late".to_owned(), "organization_share".to_owned()),
            ("owner".to_owned(), "owner".to_owned()),
        ]
    );
    let unshared = ims
        .command(
            "owner",
            "unshare-image",
            json!({"image_id": image, "organizations": ["acme-group"]}),
        )
        .await;
    assert_eq!(unshared["ok"], true, "{unshared}");
    assert!(!ims
        .visible_ids("late", position(&unshared))
        .await
        .contains(&image));
    let bad = ims
        .op(
            "register-tenant",
            json!({"tenant": "odd", "organization": "Acme Group"}),
        )
        .await;
    assert_eq!(code(&bad), "invalid_argument", "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("organization id"));
}
