//! The image store's conformance suite (DESIGN.md section 14): the same checks, run against
//! the local filesystem and against S3 (a moto_server started here; `.ci/run` installs it).

use ims_domain::{ImageId, RegionId};
use ims_store::{ImageStore, StoreLocation};
use ims_tests::LocalS3;
use object_store::GetRange;
use sha2::{Digest, Sha256};

fn new_id() -> ImageId {
    ImageId::parse(&uuid::Uuid::now_v7().to_string()).unwrap()
}

/// A file of `length` bytes that differs at every offset a part boundary could cut.
fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 31 + i / 7919) as u8).collect()
}

async fn stage(store: &ImageStore, id: &ImageId, bytes: &[u8]) {
    std::fs::write(store.staging_path(id), bytes).unwrap();
    store.commit(id).await.unwrap();
    assert!(
        !store.staging_path(id).exists(),
        "committing leaves no staging file"
    );
}

async fn read(store: &ImageStore, id: &ImageId, range: Option<GetRange>) -> Vec<u8> {
    store
        .get(id, range)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Every check a store must pass, on `location` with staging under `data_dir`.
async fn conforms(location: &StoreLocation, data_dir: &std::path::Path) {
    let region = RegionId::parse("store-1").unwrap();
    let store = ImageStore::open(location, data_dir, &region).unwrap();

    // Nothing there yet: answered as absent, not as an error.
    let missing = new_id();
    assert_eq!(store.size(&missing).await.unwrap(), None);
    assert_eq!(store.digest(&missing).await.unwrap(), None);
    assert!(matches!(
        store.get(&missing, None).await,
        Err(object_store::Error::NotFound { .. })
    ));
    store.remove(&missing).await.unwrap();

    // A file of several upload parts (8 MiB each) and an odd tail, whole and by ranges.
    let id = new_id();
    let bytes = pattern((20 << 20) + 3);
    stage(&store, &id, &bytes).await;
    assert_eq!(store.size(&id).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(
        store.digest(&id).await.unwrap(),
        Some((bytes.len() as u64, hex::encode(Sha256::digest(&bytes))))
    );
    assert!(read(&store, &id, None).await == bytes);
    let boundary = 8 << 20;
    assert!(
        read(
            &store,
            &id,
            Some(GetRange::Bounded(boundary - 5..boundary + 5))
        )
        .await
            == bytes[boundary as usize - 5..boundary as usize + 5]
    );
    assert!(read(&store, &id, Some(GetRange::Suffix(100))).await == bytes[bytes.len() - 100..]);
    assert!(read(&store, &id, Some(GetRange::Offset(7))).await == bytes[7..]);

    // A one-byte file, and a refused import that leaves nothing.
    let small = new_id();
    stage(&store, &small, b"x").await;
    assert_eq!(read(&store, &small, None).await, b"x");
    let refused = new_id();
    std::fs::write(store.staging_path(&refused), b"bad").unwrap();
    store.discard(&refused);
    assert!(!store.staging_path(&refused).exists());
    assert_eq!(store.size(&refused).await.unwrap(), None);

    // Regions keep their objects apart.
    let other = ImageStore::open(location, data_dir, &RegionId::parse("store-2").unwrap()).unwrap();
    assert_eq!(other.size(&id).await.unwrap(), None);

    // Removing is final, and removing twice is fine.
    store.remove(&id).await.unwrap();
    assert_eq!(store.size(&id).await.unwrap(), None);
    store.remove(&id).await.unwrap();
    assert_eq!(store.size(&small).await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_filesystem_store_conforms() {
    let data = tempfile::tempdir().unwrap();
    conforms(&StoreLocation::Local, data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_conforms() {
    let Some(s3) = LocalS3::start() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    conforms(&s3.store("conformance", "ims/test"), data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_that_cannot_be_reached_is_an_error_not_an_absence() {
    // A store down must never read as "no such file": audit would call every image missing
    // and a download would answer 404 instead of 503.
    let port = ims_nats_server::free_port().unwrap();
    let location: StoreLocation = format!(
        "s3://nowhere?endpoint=http://127.0.0.1:{port}&region=us-east-1&skip_signature=true"
    )
    .parse()
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store =
        ImageStore::open(&location, data.path(), &RegionId::parse("store-1").unwrap()).unwrap();
    assert!(store.size(&new_id()).await.is_err());
}

#[test]
fn opening_a_store_to_audit_it_creates_nothing() {
    let data = tempfile::tempdir().unwrap();
    let region = RegionId::parse("store-1").unwrap();
    let opened = ImageStore::open_existing(&StoreLocation::Local, data.path(), &region).unwrap();
    assert!(opened.is_none());
    assert!(
        !data.path().join("store-1").exists(),
        "an audit created the store"
    );
    ImageStore::open(&StoreLocation::Local, data.path(), &region).unwrap();
    assert!(
        ImageStore::open_existing(&StoreLocation::Local, data.path(), &region)
            .unwrap()
            .is_some()
    );
}
