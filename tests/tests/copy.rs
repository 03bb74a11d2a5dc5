//! Cross-region copies end to end (rule 9): the saga creates each copy exactly once in the
//! target region, reports failures back to the owner, survives kill -9, and works the same with
//! the regions in one process or two.

use std::time::{Duration, Instant};

use ims_cli::runtime::Roles;
use ims_domain::{CopyStatus, Event, Source};
use ims_tests::serde_json::{json, Value};
use ims_tests::{code, Client, Service};

const A: &str = "test-1";
const B: &str = "test-2";

/// Every event of a region's log, decoded.
async fn events(client: &Client) -> Vec<Event> {
    let mut all = Vec::new();
    loop {
        let batch = client.read_log(all.len() as u64 + 1, 1000).await;
        if batch.envelopes.is_empty() {
            return all;
        }
        all.extend(
            batch
                .envelopes
                .iter()
                .map(|e| ims_log::decode_event(e).unwrap()),
        );
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn copies_in(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ImageCreated(new) if matches!(new.source, Source::Copy { .. }) => {
                Some(new.id.to_string())
            }
            _ => None,
        })
        .collect()
}

/// The outcomes of copies recorded in a region's events, in log order.
fn outcomes_in(events: &[Event]) -> Vec<CopyStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CopyFinished { status, .. } => Some(status.clone()),
            _ => None,
        })
        .collect()
}

fn delivered_in(events: &[Event]) -> usize {
    outcomes_in(events)
        .iter()
        .filter(|status| **status == CopyStatus::Delivered)
        .count()
}

/// Asks region a (`a`) to copy `image` of tenant `owner` to region b; returns the reply.
async fn request_copy(a: &Client, image: &str) -> Value {
    a.command(
        "owner",
        "copy-image",
        json!({"image_id": image, "target_region": B}),
    )
    .await
}

/// Clients of regions a and b, both answering, with tenant `owner` registered in each.
async fn owner_in_both_regions(nats_url: &str, data_dir: &std::path::Path) -> (Client, Client) {
    let a = Client::connect(nats_url, A, data_dir).await;
    let b = Client::connect(nats_url, B, data_dir).await;
    a.wait_ready().await;
    b.wait_ready().await;
    a.register(&["owner"]).await;
    b.register(&["owner"]).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_arrives_in_the_target_region_and_becomes_usable_after_its_transfer() {
    // Proves the happy path: owner, lineage and status in region b; region a's image unchanged.
    let service = Service::start_with(Roles::ALL, &[A, B]).await;
    let a = &service.client;
    let b = Client::connect(&service.nats.url(), B, service.data_dir()).await;
    a.register(&["owner"]).await;
    b.register(&["owner"]).await;
    let image = a
        .active_image("owner", json!({"name": "golden", "tags": {"tier": "gold"}}))
        .await;
    // As of the build: the projection may not have applied it yet.
    let before = a
        .query_at("owner", "image", json!({"image_id": image}), a.head().await)
        .await;
    let copy = request_copy(a, &image).await;
    assert_eq!(copy["ok"], true, "{copy}");
    let copy_id = copy["copy_image_id"].as_str().unwrap().to_owned();
    eventually("the copy in region b", || async {
        b.query("owner", "image", json!({"image_id": copy_id}))
            .await["ok"]
            != false
    })
    .await;
    let view: Value = b
        .query("owner", "image", json!({"image_id": copy_id}))
        .await;
    assert_eq!(view["owner"], "owner");
    assert_eq!(view["type"], "private");
    assert_eq!(view["status"], "saving");
    assert_eq!(view["name"], "golden");
    assert_eq!(view["tags"]["tier"], "gold");
    assert_eq!(
        view["source"]["copy"],
        json!({"region": A, "image_id": image})
    );
    let usable = b
        .query("owner", "usable", json!({"image_id": copy_id}))
        .await;
    assert_eq!(
        usable["allowed"], false,
        "not before the transfer: {usable}"
    );
    let built = b.op("report-build", json!({"image_id": copy_id, "outcome": "succeeded", "size_bytes": 42, "checksum_sha256": "cd".repeat(32)})).await;
    let usable = b
        .query_at(
            "owner",
            "usable",
            json!({"image_id": copy_id}),
            built["position"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(usable["allowed"], true, "{usable}");
    eventually("the delivered copy recorded at the source", || async {
        let view = a.query("owner", "image", json!({"image_id": image})).await;
        view["copies"][0]["status"] == "delivered"
    })
    .await;
    let after = a.query("owner", "image", json!({"image_id": image})).await;
    for field in [
        "name",
        "status",
        "tags",
        "source",
        "owner",
        "size_bytes",
        "checksum_sha256",
    ] {
        assert_eq!(
            after[field], before[field],
            "region a's image changed its {field}"
        );
    }
    assert_eq!(after["copies"][0]["copy_image_id"], json!(copy_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_to_a_region_where_the_tenant_is_not_registered_ends_in_a_visible_failure() {
    // Proves failures are reported to the owner, and encrypted images are refused up front.
    let service = Service::start_with(Roles::ALL, &[A, B]).await;
    let a = &service.client;
    a.register(&["owner"]).await;
    let encrypted = a
        .active_image("owner", json!({"encryption": {"kms_key_id": "kms-9"}}))
        .await;
    let refused = request_copy(a, &encrypted).await;
    assert_eq!(code(&refused), "encrypted_not_copyable", "{refused}");
    let image = a.active_image("owner", json!({})).await;
    let copy = request_copy(a, &image).await;
    assert_eq!(copy["ok"], true);
    eventually("the failed copy at the source", || async {
        let view = a.query("owner", "image", json!({"image_id": image})).await;
        view["copies"][0]["status"] == "failed"
    })
    .await;
    let view = a.query("owner", "image", json!({"image_id": image})).await;
    assert!(
        view["copies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown_tenant"),
        "{view}"
    );
    let feed = a.query("owner", "feed", json!({})).await;
    assert!(
        feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "copy_failed"),
        "{feed}"
    );
}

fn imsd(
    nats_url: &str,
    data_dir: &std::path::Path,
    role: &str,
    regions: &str,
) -> ims_tests::KilledOnDrop {
    ims_tests::spawn_imsd(
        env!("CARGO_BIN_EXE_imsd-under-test"),
        role,
        nats_url,
        data_dir,
        regions,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_copies_survive_kill_9_of_the_saga_and_arrive_exactly_once() {
    // Proves the saga is log-driven and idempotent: crashes anywhere never lose or double a copy.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let mut child = imsd(&nats.url(), data.path(), "run", "test-1,test-2");
    let (a, b) = owner_in_both_regions(&nats.url(), data.path()).await;
    let image = a.active_image("owner", json!({})).await;
    let mut requested = 0;
    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..4 {
        for _ in 0..(if round < 3 { 13 } else { 50 - requested }) {
            let reply = request_copy(&a, &image).await;
            assert_eq!(reply["ok"], true, "{reply}");
            requested += 1;
        }
        if round < 3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tokio::time::sleep(Duration::from_millis(seed % 400)).await;
            child.kill().unwrap(); // SIGKILL, anywhere in the saga's work
            child.wait().unwrap();
            child = imsd(&nats.url(), data.path(), "run", "test-1,test-2");
            a.wait_ready().await;
        }
    }
    assert_eq!(requested, 50);
    eventually("50 delivered copies recorded in region a", || async {
        delivered_in(&events(&a).await) == 50
    })
    .await;
    let copies = copies_in(&events(&b).await);
    let unique: std::collections::BTreeSet<&String> = copies.iter().collect();
    assert_eq!(
        (copies.len(), unique.len()),
        (50, 50),
        "exactly 50 copies, none twice"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_made_before_a_crash_is_recorded_delivered_even_if_the_source_was_deleted_meanwhile()
{
    // Proves the saga finishes what it asked for: region b made the copy, the process died before
    // region a recorded the outcome, and the source was deleted in between. The outcome must say
    // what region b holds, not "failed".
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let hold_the_window = [(ims_saga::PAUSE_AFTER_RECEIVE_ENV, "60000")];
    let mut child = ims_tests::spawn_imsd_with_env(
        env!("CARGO_BIN_EXE_imsd-under-test"),
        "run",
        &nats.url(),
        data.path(),
        "test-1,test-2",
        &hold_the_window,
    );
    let (a, b) = owner_in_both_regions(&nats.url(), data.path()).await;
    let image = a.active_image("owner", json!({})).await;
    let copy = request_copy(&a, &image).await;
    assert_eq!(copy["ok"], true, "{copy}");
    eventually("the copy made in region b", || async {
        copies_in(&events(&b).await).len() == 1
    })
    .await;
    // The saga now holds before recording the outcome: delete the source, then crash.
    let deleted = a
        .command("owner", "delete-image", json!({"image_id": image}))
        .await;
    assert_eq!(deleted["ok"], true, "{deleted}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = imsd(&nats.url(), data.path(), "run", "test-1,test-2");
    a.wait_ready().await;
    eventually("the copy's outcome recorded in region a", || async {
        !outcomes_in(&events(&a).await).is_empty()
    })
    .await;
    assert_eq!(outcomes_in(&events(&a).await), vec![CopyStatus::Delivered]);
    assert_eq!(copies_in(&events(&b).await).len(), 1, "exactly one copy");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_in_two_processes_copy_the_same_as_in_one() {
    // Proves the regions only meet over NATS: region b's writer runs in a process of its own.
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let nats = ims_tests::secured_nats(data_a.path());
    // The processes of one deployment share the NATS keys; process a runs the identity role.
    ims_tests::share_nats_keys(data_a.path(), data_b.path());
    let mut process_a = imsd(&nats.url(), data_a.path(), "run", A);
    let mut process_b = imsd(&nats.url(), data_b.path(), "command", B);
    let (a, b) = owner_in_both_regions(&nats.url(), data_a.path()).await;
    let image = a.active_image("owner", json!({})).await;
    for _ in 0..3 {
        let reply = request_copy(&a, &image).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    eventually("3 delivered copies", || async {
        delivered_in(&events(&a).await) == 3
    })
    .await;
    assert_eq!(copies_in(&events(&b).await).len(), 3);
    for child in [&mut process_a, &mut process_b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
