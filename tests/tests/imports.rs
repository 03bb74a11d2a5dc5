//! The image data plane, first slice (DESIGN.md section 14): files under the import root are
//! imported, hashed, inspected and stored by the import worker; hostile ones are refused with a
//! reason the owner sees and nothing stored; the bytes are served to the owner and accepted
//! members only, with Range requests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ims_tests::serde_json::{json, Value};
use ims_tests::{Client, Service, REGION};
use sha2::{Digest, Sha256, Sha512};

/// `qemu-img create -f FORMAT [OPTIONS] PATH 64M` (qemu-utils, installed by `.ci/run`).
fn qemu_img(path: &Path, format: &str, options: &[&str]) {
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .args(options)
        .arg(path)
        .arg("64M")
        .status()
        .expect("qemu-img is needed: apt-get install qemu-utils");
    assert!(status.success());
}

async fn create_from(ims: &Client, tenant: &str, path: &Path, format: &str) -> String {
    create_from_url(ims, tenant, &format!("file://{}", path.display()), format).await
}

async fn create_from_url(ims: &Client, tenant: &str, url: &str, format: &str) -> String {
    let reply = ims
        .command(
            tenant,
            "create-image",
            json!({"name": "imported", "disk": "system",
                   "os": {"platform": "ubuntu", "version": "24.04", "arch": "x86_64"},
                   "min_disk_gb": 1,
                   "source": {"file": {"url": url, "format": format}}}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply["image_id"].as_str().unwrap().to_owned()
}

/// Owner's image `id` copied from `a`'s region to `target_region` (served to `b`): the copy's
/// id and its view once active.
async fn copied_to(a: &Client, b: &Client, target_region: &str, id: &str) -> (String, Value) {
    let copied = a
        .command(
            "owner",
            "copy-image",
            json!({"image_id": id, "target_region": target_region}),
        )
        .await;
    assert_eq!(copied["ok"], true, "{copied}");
    let copy = copied["copy_image_id"].as_str().unwrap().to_owned();
    let target = settled(b, "owner", &copy).await;
    assert_eq!(target["status"], "active", "{target}");
    (copy, target)
}

/// The owner's view of the image once the import worker has reported it.
async fn settled(ims: &Client, tenant: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        // Until the projection has the image, the query answers not_found: keep asking.
        let view = ims.query(tenant, "image", json!({"image_id": id})).await;
        if view["status"] == "active" || view["status"] == "killed" {
            return view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never imported: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET returning the status, the headers (lower-case names) and the raw body.
async fn get_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    range: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let range = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{range}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn object_path(service: &Service, id: &str) -> PathBuf {
    service
        .data_dir()
        .join(REGION)
        .join("store")
        .join("images")
        .join(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qcow2_under_the_import_root_is_imported_hashed_inspected_and_served_to_whom_it_may() {
    // Proves the import path end to end: hashes and format in the image, exact bytes served to
    // the owner (whole and by range) and to an accepted member, and to nobody else.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "member", "stranger"]).await;
    let path = service.import_root().join("web.qcow2");
    qemu_img(&path, "qcow2", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let id = create_from(ims, "owner", &path, "qcow2").await;
    let view = settled(ims, "owner", &id).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(view["os_hash_algo"], "sha512");
    assert_eq!(view["os_hash_value"], hex::encode(Sha512::digest(&bytes)));
    assert_eq!(view["detected_format"], "qcow2");
    assert_eq!(view["virtual_size"], json!(64u64 << 20));
    assert_eq!(view["size_bytes"], json!(bytes.len()));

    let file = format!("/v1/{REGION}/tenants/owner/images/{id}/file");
    let owner = ims.issue("tenant", Some("owner")).await;
    let (status, headers, body) = get_bytes(service.http_addr, &file, &owner, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "the download differs from the file");
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    let (status, headers, body) =
        get_bytes(service.http_addr, &file, &owner, Some("bytes=100-199")).await;
    assert_eq!(status, 206);
    assert_eq!(body, bytes[100..200]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 100-199/{}", bytes.len()).as_str())
    );

    let stranger = ims.issue("tenant", Some("stranger")).await;
    let strangers_path = format!("/v1/{REGION}/tenants/stranger/images/{id}/file");
    assert_eq!(
        get_bytes(service.http_addr, &strangers_path, &stranger, None)
            .await
            .0,
        404
    );
    assert_eq!(
        get_bytes(service.http_addr, &file, &stranger, None).await.0,
        403
    );

    let member = ims.issue("tenant", Some("member")).await;
    let members_path = format!("/v1/{REGION}/tenants/member/images/{id}/file");
    let shared = ims
        .command(
            "owner",
            "share-image",
            json!({"image_id": id, "tenants": ["member"]}),
        )
        .await;
    assert_eq!(shared["ok"], true, "{shared}");
    let at = shared["position"].as_u64().unwrap();
    ims.query_at("member", "shared-with-me", json!({}), at)
        .await;
    assert_eq!(
        get_bytes(service.http_addr, &members_path, &member, None)
            .await
            .0,
        404,
        "a pending member downloads"
    );
    let accepted = ims
        .command("member", "accept-share", json!({"image_id": id}))
        .await;
    ims.query_at(
        "member",
        "shared-with-me",
        json!({}),
        accepted["position"].as_u64().unwrap(),
    )
    .await;
    let (status, _, body) = get_bytes(service.http_addr, &members_path, &member, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes);

    // Deleting the image keeps its object while it is in the recycle bin (a restore needs the
    // bytes), and purging it from there removes the object.
    assert!(object_path(&service, &id).exists());
    let recycled = ims
        .command("owner", "delete-image", json!({"image_id": id}))
        .await;
    assert_eq!(recycled["ok"], true, "{recycled}");
    tokio::time::sleep(ims_scheduler::TICK * 4).await;
    assert!(
        object_path(&service, &id).exists(),
        "recycling removed the bytes"
    );
    let deleted = ims
        .command("owner", "delete-image", json!({"image_id": id}))
        .await;
    assert_eq!(deleted["ok"], true, "{deleted}");
    let started = Instant::now();
    while object_path(&service, &id).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the object outlived its image"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get_bytes(service.http_addr, &file, &owner, None).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_refused_with_a_reason_the_owner_sees_and_nothing_is_stored() {
    // Proves the inspector guards the import: a qcow2 declared raw, a qcow2 with a backing file,
    // a path outside the import root and a missing file each fail with their reason.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner"]).await;
    let root = service.import_root();
    let qcow2 = root.join("disk.qcow2");
    qemu_img(&qcow2, "qcow2", &[]);
    let backed = root.join("backed.qcow2");
    qemu_img(&backed, "qcow2", &["-F", "raw", "-b", "/etc/passwd"]);
    let cases = [
        (qcow2.clone(), "raw", "declared raw but is qcow2"),
        (backed, "qcow2", "backing file"),
        (
            PathBuf::from("/etc/passwd"),
            "raw",
            "outside the import root",
        ),
        (root.join("missing.raw"), "raw", "cannot be read"),
    ];
    for (path, format, reason) in cases {
        let id = create_from(ims, "owner", &path, format).await;
        let view = settled(ims, "owner", &id).await;
        assert_eq!(view["status"], "killed", "{view}");
        let failure = view["failure_reason"].as_str().unwrap_or_default();
        assert!(failure.contains(reason), "{path:?}: {failure}");
        assert!(!object_path(&service, &id).exists(), "{path:?} was stored");
    }
    let feed = ims.query("owner", "feed", json!({})).await;
    let failures = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["kind"] == "build_failed")
        .count();
    assert_eq!(failures, 4, "{feed}");
    let staging = service
        .data_dir()
        .join(REGION)
        .join("store")
        .join("staging");
    assert_eq!(
        std::fs::read_dir(staging).unwrap().count(),
        0,
        "a staging file was left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_every_imported_file_against_its_recorded_size_and_sha256() {
    // Proves that a changed byte in a stored image file is found offline.
    let mut service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner"]).await;
    let path = service.import_root().join("disk.raw");
    std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
    let id = create_from(ims, "owner", &path, "raw").await;
    assert_eq!(settled(ims, "owner", &id).await["status"], "active");
    service.stop().await;
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
            .args(["--region", REGION, "audit", "--data-dir"])
            .arg(service.data_dir())
            .arg("verify")
            .output()
            .unwrap()
    };
    let clean = verify();
    let out = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{out}");
    assert!(out.contains("image files: every"), "{out}");
    let object = object_path(&service, &id);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    let tampered = verify();
    let out = String::from_utf8_lossy(&tampered.stdout);
    assert_eq!(tampered.status.code(), Some(1), "{out}");
    assert!(out.contains(&id) && out.contains("SHA-256"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_by_kill_9_finishes_once_after_the_restart_and_leaves_no_orphan() {
    // Proves the import worker is resumable and exactly once: SIGKILL while the file streams
    // into staging, restart, and the image is built once, from the whole file.
    let data = tempfile::tempdir().unwrap();
    let nats = ims_tests::secured_nats(data.path());
    let root = Service::import_root_of(data.path());
    let root_text = root.to_str().unwrap().to_owned();
    let spawn = || {
        ims_tests::spawn_imsd_with_env(
            env!("CARGO_BIN_EXE_imsd-under-test"),
            "run",
            &nats.url(),
            data.path(),
            REGION,
            &[("IMS_IMPORT_ROOT", &root_text)],
        )
    };
    let mut imsd = spawn();
    let ims = Client::connect(&nats.url(), REGION, data.path()).await;
    ims.wait_ready().await;
    ims.register(&["owner"]).await;
    let path = root.join("big.raw");
    let pattern: Vec<u8> = (0..(256u32 << 20) / 4)
        .flat_map(|n| n.to_le_bytes())
        .collect();
    std::fs::write(&path, &pattern).unwrap();
    let id = create_from(&ims, "owner", &path, "raw").await;
    let staging = data
        .path()
        .join(REGION)
        .join("store")
        .join("staging")
        .join(&id);
    let started = Instant::now();
    while std::fs::metadata(&staging).map_or(0, |m| m.len()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the import never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    imsd.kill().unwrap();
    imsd.wait().unwrap();
    let cut = std::fs::metadata(&staging).map_or(0, |m| m.len());
    let _imsd = spawn();
    ims.wait_ready().await;
    let view = settled(&ims, "owner", &id).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(
        view["checksum_sha256"],
        hex::encode(Sha256::digest(&pattern))
    );
    assert!(!staging.exists(), "the staging file was left behind");
    let history = ims.query("owner", "image", json!({"image_id": id})).await;
    assert_eq!(
        history["version"], 3,
        "created, file verified, built: once each ({history}); cut at {cut} bytes"
    );
}

/// A PUT of `body`, returning the status and the JSON answer.
async fn put_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        ims_tests::serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_checked_stored_and_reported_once_by_its_owner_only() {
    // Proves the upload source: the owner PUTs the bytes, they are hashed, inspected and served
    // back; a second upload, a stranger's upload and a file that is not what was declared are
    // refused with their reasons.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "stranger"]).await;
    let path = service.import_root().join("up.qcow2");
    qemu_img(&path, "qcow2", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let create = |format: &str| json!({"name": "uploaded", "disk": "data", "min_disk_gb": 1, "source": {"upload": {"format": format}}});
    let created = ims.command("owner", "create-image", create("qcow2")).await;
    let id = created["image_id"].as_str().unwrap().to_owned();
    ims.query_at(
        "owner",
        "image",
        json!({"image_id": id}),
        created["position"].as_u64().unwrap(),
    )
    .await;
    let owner = ims.issue("tenant", Some("owner")).await;
    let stranger = ims.issue("tenant", Some("stranger")).await;
    let file = format!("/v1/{REGION}/tenants/owner/images/{id}/file");
    assert_eq!(
        put_bytes(service.http_addr, &file, &stranger, &bytes)
            .await
            .0,
        403
    );
    let (status, reply) = put_bytes(service.http_addr, &file, &owner, &bytes).await;
    assert_eq!(status, 200, "{reply}");
    let view = settled(ims, "owner", &id).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(view["detected_format"], "qcow2");
    assert_eq!(view["source"], json!({"upload": {"format": "qcow2"}}));
    let (status, _, body) = get_bytes(service.http_addr, &file, &owner, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    let (status, again) = put_bytes(service.http_addr, &file, &owner, &bytes).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{again}"
    );

    let created = ims.command("owner", "create-image", create("raw")).await;
    let raw_id = created["image_id"].as_str().unwrap().to_owned();
    ims.query_at(
        "owner",
        "image",
        json!({"image_id": raw_id}),
        created["position"].as_u64().unwrap(),
    )
    .await;
    let raw_file = format!("/v1/{REGION}/tenants/owner/images/{raw_id}/file");
    let (status, refused) = put_bytes(service.http_addr, &raw_file, &owner, &bytes).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declared raw but is qcow2"),
        "{refused}"
    );
    let view = settled(ims, "owner", &raw_id).await;
    assert_eq!(view["status"], "killed", "{view}");
    assert!(!object_path(&service, &raw_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsctl_imports_a_file_and_downloads_it_back() {
    // Proves the CLI path of the data plane: image import (create, then upload over HTTP) and
    // image download, with the tenant's credential; a stranger's download is refused.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner", "stranger"]).await;
    let file = service.import_root().join("cli.vmdk");
    qemu_img(&file, "vmdk", &[]);
    let bytes = std::fs::read(&file).unwrap();
    let imsctl = |token: &str, tenant: &str, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
            .args([
                "--nats-url",
                &service.nats.url(),
                "--region",
                REGION,
                "--tenant",
                tenant,
            ])
            .args([
                "--http-url",
                &format!("http://{}", service.http_addr),
                "--token",
                token,
            ])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let owner = ims.issue("tenant", Some("owner")).await;
    let (code, out) = imsctl(
        &owner,
        "owner",
        &[
            "image",
            "import",
            "--file",
            file.to_str().unwrap(),
            "--format",
            "vmdk",
            "--name",
            "cli",
            "--disk",
            "data",
            "--min-disk-gb",
            "1",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let id = out.split_whitespace().last().unwrap().to_owned();
    let view = settled(ims, "owner", &id).await;
    assert_eq!(
        (view["status"].as_str(), view["detected_format"].as_str()),
        (Some("active"), Some("vmdk")),
        "{view}"
    );
    let copy = service.data_dir().join("downloaded.vmdk");
    let (code, out) = imsctl(
        &owner,
        "owner",
        &["image", "download", &id, "--output", copy.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        std::fs::read(&copy).unwrap() == bytes,
        "the download differs"
    );
    let stranger = ims.issue("tenant", Some("stranger")).await;
    let (code, out) = imsctl(
        &stranger,
        "stranger",
        &["image", "download", &id, "--output", copy.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{out}");

    let (port, _) = mirror(ims_tests::WEB_MIRROR, bytes.clone(), String::new()).await;
    let url = format!("http://{}:{port}/image", ims_tests::WEB_MIRROR);
    let from_url = |format: &'static str| {
        let url = url.clone();
        let owner = owner.clone();
        let imsctl = &imsctl;
        move || {
            imsctl(
                &owner,
                "owner",
                &[
                    "--json",
                    "image",
                    "import",
                    "--url",
                    &url,
                    "--format",
                    format,
                    "--name",
                    "web",
                    "--disk",
                    "data",
                    "--min-disk-gb",
                    "1",
                ],
            )
        }
    };
    let (code, out) = tokio::task::block_in_place(from_url("vmdk"));
    assert_eq!(code, Some(0), "{out}");
    let view: Value = ims_tests::serde_json::from_str(&out).unwrap();
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
    let (code, out) = tokio::task::block_in_place(from_url("qcow2"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("declared qcow2 but is vmdk"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_across_regions_moves_the_bytes_and_hashes_them_again() {
    // Proves the copy saga carries the file: the copy in the target region becomes active with
    // the same SHA-256, and its bytes are served there.
    const B: &str = "test-2";
    let service = Service::start_with(ims_cli::runtime::Roles::ALL, &[REGION, B]).await;
    let a = &service.client;
    let b = Client::connect(&service.nats.url(), B, service.data_dir()).await;
    a.register(&["owner"]).await;
    b.register(&["owner"]).await;
    let path = service.import_root().join("golden.raw");
    std::fs::write(
        &path,
        (0..(4u32 << 20)).map(|n| n as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let id = create_from(a, "owner", &path, "raw").await;
    let source = settled(a, "owner", &id).await;
    assert_eq!(source["status"], "active", "{source}");
    let (copy, target) = copied_to(a, &b, B, &id).await;
    assert_eq!(target["checksum_sha256"], source["checksum_sha256"]);
    assert_eq!(target["os_hash_value"], source["os_hash_value"]);
    let owner = a.issue("tenant", Some("owner")).await;
    let (status, _, body) = get_bytes(
        service.http_addr,
        &format!("/v1/{B}/tenants/owner/images/{copy}/file"),
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body == bytes, "the copy's bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_files_are_imported_served_copied_across_processes_and_removed() {
    // Proves the S3 store end to end: an import lands in the bucket (and nowhere on disk), is
    // served over HTTP, is copied into a region another process serves (the store is shared,
    // so the saga moves the bytes there), and deleting the image removes its object.
    const B: &str = "test-2";
    let Some(s3) = ims_tests::LocalS3::start() else {
        return;
    };
    let store = s3.store("images", "deployment");
    let roles = ims_cli::runtime::Roles::ALL;
    let service = Service::start_on(roles, &[REGION], store.clone()).await;
    let peer = service.peer(&[B], store.clone());
    let a = &service.client;
    let b = Client::connect(&service.nats.url(), B, service.data_dir()).await;
    b.wait_ready().await;
    a.register(&["owner"]).await;
    b.register(&["owner"]).await;
    let path = service.import_root().join("s3.qcow2");
    qemu_img(&path, "qcow2", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let id = create_from(a, "owner", &path, "qcow2").await;
    let source = settled(a, "owner", &id).await;
    assert_eq!(source["status"], "active", "{source}");
    assert!(
        !object_path(&service, &id).exists(),
        "an S3 import left a local object"
    );
    let objects = |region: &str| {
        ims_store::ImageStore::open(
            &store,
            service.data_dir(),
            &ims_domain::RegionId::parse(region).unwrap(),
        )
        .unwrap()
    };
    let image = ims_domain::ImageId::parse(&id).unwrap();
    assert_eq!(
        objects(REGION).digest(&image).await.unwrap(),
        Some((bytes.len() as u64, hex::encode(Sha256::digest(&bytes))))
    );
    let owner = a.issue("tenant", Some("owner")).await;
    let file = format!("/v1/{REGION}/tenants/owner/images/{id}/file");
    let (status, _, body) = get_bytes(service.http_addr, &file, &owner, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes);

    let (copy, target) = copied_to(a, &b, B, &id).await;
    assert_eq!(target["checksum_sha256"], source["checksum_sha256"]);
    let (status, _, body) = get_bytes(
        peer.http_addr,
        &format!("/v1/{B}/tenants/owner/images/{copy}/file"),
        &owner,
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the peer serves the copy from the shared store"
    );
    assert!(body == bytes, "the copy's bytes differ");

    // Into the recycle bin, then purged from there: the object goes with the purge.
    for _ in 0..2 {
        let deleted = a
            .command("owner", "delete-image", json!({"image_id": id}))
            .await;
        assert_eq!(deleted["ok"], true, "{deleted}");
    }
    let started = Instant::now();
    while objects(REGION).size(&image).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the object outlived its image"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = ims_domain::ImageId::parse(&copy).unwrap();
    assert!(
        objects(B).size(&copy).await.unwrap().is_some(),
        "the copy keeps its file"
    );
}

/// A tiny web server on `address`: `/image` answers `image`, `/hop` redirects to `/image`,
/// `/elsewhere` redirects to `elsewhere`. Returns its port and how many requests it answered.
async fn mirror(
    address: std::net::IpAddr,
    image: Vec<u8>,
    elsewhere: String,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let image = image.clone();
            let elsewhere = elsewhere.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let redirect = |to: &str| {
                    format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                };
                let answer = match path.as_str() {
                    "/image" => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", image.len());
                        [head.into_bytes(), image].concat()
                    }
                    "/hop" => redirect("/image").into_bytes(),
                    "/elsewhere" => redirect(&elsewhere).into_bytes(),
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&answer).await;
            });
        }
    });
    (port, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_downloads_are_imported_and_internal_addresses_are_refused_even_after_a_redirect() {
    // Proves the web-download source and its rules: an http URL (through a redirect) is
    // imported like a file; a link-local address (the clouds' metadata service), loopback, a
    // port other than 80/443 and a redirect from the allowed mirror to loopback are refused
    // with the rule that refused them, and the loopback server never sees a request.
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner"]).await;
    let path = service.import_root().join("web.qcow2");
    qemu_img(&path, "qcow2", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let (internal, internal_answered) =
        mirror("127.0.0.1".parse().unwrap(), bytes.clone(), String::new()).await;
    let internal_url = format!("http://127.0.0.1:{internal}/image");
    let (port, _) = mirror(ims_tests::WEB_MIRROR, bytes.clone(), internal_url.clone()).await;
    let mirror_url = |path: &str| format!("http://{}:{port}{path}", ims_tests::WEB_MIRROR);

    let id = create_from_url(ims, "owner", &mirror_url("/hop"), "qcow2").await;
    let view = settled(ims, "owner", &id).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(view["os_hash_value"], hex::encode(Sha512::digest(&bytes)));
    assert_eq!(view["detected_format"], "qcow2");
    assert_eq!(std::fs::read(object_path(&service, &id)).unwrap(), bytes);

    for (url, reason) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 (link-local address)",
        ),
        (internal_url.clone(), "127.0.0.1 (loopback address)"),
        (mirror_url("/elsewhere"), "127.0.0.1 (loopback address)"),
        (mirror_url("/missing"), "404 Not Found"),
        (
            "http://8.8.8.8:8080/a.qcow2".to_owned(),
            "only from ports 80 and 443",
        ),
    ] {
        let id = create_from_url(ims, "owner", &url, "qcow2").await;
        let view = settled(ims, "owner", &id).await;
        assert_eq!(view["status"], "killed", "{url}: {view}");
        let why = view["failure_reason"].as_str().unwrap_or_default();
        assert!(why.contains(reason), "{url}: {why}");
        assert!(!object_path(&service, &id).exists(), "{url}");
    }
    assert_eq!(
        internal_answered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the loopback server was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_off_records_nothing_and_the_owner_uploads_again() {
    // Proves a cut connection says nothing about the file: the image stays queued, nothing is
    // stored, and a whole upload afterwards is imported.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["owner"]).await;
    let path = service.import_root().join("cut.qcow2");
    qemu_img(&path, "qcow2", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let created = ims
        .command(
            "owner",
            "create-image",
            json!({"name": "cut", "disk": "data", "min_disk_gb": 1, "source": {"upload": {"format": "qcow2"}}}),
        )
        .await;
    let id = created["image_id"].as_str().unwrap().to_owned();
    ims.query_at(
        "owner",
        "image",
        json!({"image_id": id}),
        created["position"].as_u64().unwrap(),
    )
    .await;
    let owner = ims.issue("tenant", Some("owner")).await;
    let file = format!("/v1/{REGION}/tenants/owner/images/{id}/file");

    // Half the announced bytes, then the connection closes.
    let mut stream = tokio::net::TcpStream::connect(service.http_addr)
        .await
        .unwrap();
    let head = format!(
        "PUT {file} HTTP/1.1\r\nHost: ims\r\nAuthorization: Bearer {owner}\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = ims.query("owner", "image", json!({"image_id": id})).await;
    assert_eq!(view["status"], "queued", "{view}");
    assert!(
        !object_path(&service, &id).exists(),
        "half a file was stored"
    );

    let (status, reply) = put_bytes(service.http_addr, &file, &owner, &bytes).await;
    assert_eq!(status, 200, "{reply}");
    let view = settled(ims, "owner", &id).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["checksum_sha256"], hex::encode(Sha256::digest(&bytes)));
}
