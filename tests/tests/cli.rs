//! imsctl's exit codes, exactly as the README promises them: 0 success, 1 the service refused
//! (its error code printed), 2 bad usage, 3 the service could not be reached; and options
//! accepted wherever they stand.

use std::process::Command;

use ims_tests::{Service, REGION};

/// Runs imsctl; its exit code, stdout and stderr.
fn imsctl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
        .args(args)
        .env_remove("IMS_TOKEN")
        .env_remove("IMS_TENANT")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_success_refusal_bad_usage_or_no_service() {
    let service = Service::start().await;
    service.client.register(&["t1"]).await;
    let token = service.client.issue("tenant", Some("t1")).await;
    let url = service.nats.url();
    let base = [
        "--nats-url",
        url.as_str(),
        "--region",
        REGION,
        "--token",
        token.as_str(),
    ];
    let with = |rest: &[&str]| -> Vec<String> {
        base.iter().chain(rest).map(|arg| arg.to_string()).collect()
    };

    // 0: answered.
    let (code, out, err) = imsctl(&with(&["--tenant", "t1", "images", "list"]));
    assert_eq!(code, 0, "{out}{err}");

    // `image show` and `images show` are the same query.
    let image = service
        .client
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let (code, by_image, err) = imsctl(&with(&[
        "--tenant", "t1", "--json", "image", "show", &image,
    ]));
    assert_eq!(code, 0, "{by_image}{err}");
    let (_, by_images, _) = imsctl(&with(&[
        "--tenant", "t1", "--json", "images", "show", &image,
    ]));
    assert_eq!(by_image, by_images);

    // --help teaches every option of image create, and that a source is required.
    let (code, help, _) = imsctl(&["image", "create", "--help"]);
    assert_eq!(code, 0);
    for taught in [
        "one of the two is required",
        "The image's name",
        "The smallest disk, in GB",
        "Refuse deletes until",
        "Free text",
    ] {
        assert!(help.contains(taught), "{taught:?} missing from:\n{help}");
    }

    // 1: the service refused, and says why.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, out, err) = imsctl(&with(&["--tenant", "t1", "image", "delete", &unknown]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("not_found"), "{out}");

    // 2: bad usage, each with what would be accepted.
    for (args, says) in [
        (with(&["image", "delete", &unknown]), "pass --tenant ID"),
        (
            with(&[
                "--tenant",
                "t1",
                "--command-id",
                "not-a-uuid",
                "image",
                "delete",
                &unknown,
            ]),
            "is not a UUID; give one such as",
        ),
        (with(&["--tenant", "t1", "image", "create"]), "required"),
        (with(&["--tenant", "a.b", "images", "list"]), "--tenant: "),
        (
            [
                "--region",
                "Bad",
                "audit",
                "--data-dir",
                "/nonexistent",
                "verify",
            ]
            .map(str::to_owned)
            .to_vec(),
            "--region: invalid region id \"Bad\"",
        ),
        (
            with(&["audit", "verify", "--data-dir", "/nonexistent/typo"]),
            "there is no log of region",
        ),
        (
            vec![
                "--token-file".to_owned(),
                "/nonexistent/token".to_owned(),
                "images".to_owned(),
                "list".to_owned(),
            ],
            "reading the token file",
        ),
    ] {
        let (code, out, err) = imsctl(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // 3: no service there.
    let nowhere = format!("nats://127.0.0.1:{}", ims_nats_server::free_port().unwrap());
    let (code, out, err) = imsctl(&[
        "--nats-url",
        &nowhere,
        "--token",
        &token,
        "--tenant",
        "t1",
        "images",
        "list",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    // A region nobody serves: said once, with what to do.
    let (code, out, err) = imsctl(&[
        "--nats-url",
        &url,
        "--region",
        "other-1",
        "--token",
        &token,
        "--tenant",
        "t1",
        "images",
        "list",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("no imsd on") && err.contains("serves region other-1"),
        "{err}"
    );
    assert_eq!(err.matches("no responders").count(), 0, "{err}");

    // Options stand anywhere: global ones after the subcommand, audit's after its own.
    let (code, out, err) = imsctl(&[
        "images",
        "list",
        "--tenant",
        "t1",
        "--json",
        "--nats-url",
        &url,
        "--region",
        REGION,
        "--token",
        &token,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        ims_tests::serde_json::from_str::<ims_tests::serde_json::Value>(&out).is_ok(),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_as_sentences_and_export_says_what_it_wrote() {
    let service = Service::start().await;
    let ims = &service.client;
    ims.register(&["t1"]).await;
    let image = ims
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let listed = ims
        .command(
            "t1",
            "list-on-marketplace",
            ims_tests::serde_json::json!({"image_id": image, "publisher": "Acme",
                "price": {"model": "per_hour", "amount_minor": 120, "currency": "USD"}}),
        )
        .await;
    assert_eq!(listed["ok"], true, "{listed}");
    let auditor = ims.issue("auditor", None).await;
    let url = service.nats.url();
    let (code, out, err) = imsctl(&[
        "--nats-url",
        &url,
        "--region",
        REGION,
        "--token",
        &auditor,
        "audit",
        "history",
        "--image",
        &image,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("system disk image from ECS ecs-42"), "{out}");
    assert!(
        out.contains("listed on the Marketplace by Acme at 120 minor units of USD per hour"),
        "{out}"
    );
    assert!(!out.contains('{'), "no Rust debug formatting: {out}");

    let file = service.data_dir().join("export.jsonl");
    let (code, out, err) = imsctl(&[
        "--nats-url",
        &url,
        "--region",
        REGION,
        "--token",
        &auditor,
        "audit",
        "export",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(
        out.contains(&format!("exported {lines} events")) && out.contains("export.jsonl"),
        "{out}"
    );
}

#[test]
fn imsctl_finds_the_nats_server_imsd_run_started_whatever_its_port() {
    // Hold 4222 so that imsd's own nats-server has to take another port (if something else
    // holds it already, the same holds).
    let _holder = std::net::TcpListener::bind("127.0.0.1:4222");
    let home = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", ims_nats_server::free_port().unwrap());
    let imsd = Command::new(env!("CARGO_BIN_EXE_imsd-under-test"))
        .args(["run", "--http-addr", &http])
        .current_dir(home.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let imsd = ims_tests::KilledOnDrop(imsd);
    let url_file = home.path().join("data").join("nats.url");
    let started = std::time::Instant::now();
    // No --nats-url and no --token: ./data/nats.url and ./data/operator.token.
    let registered = loop {
        if url_file.exists() {
            let output = Command::new(env!("CARGO_BIN_EXE_imsctl-under-test"))
                .args(["op", "register-tenant", "acme"])
                .current_dir(home.path())
                .env_remove("IMS_NATS_URL")
                .env_remove("IMS_TOKEN")
                .output()
                .unwrap();
            if output.status.success() {
                break String::from_utf8_lossy(&output.stdout).into_owned();
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "imsctl never reached imsd's own nats-server"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(registered.contains("ok"), "{registered}");
    let url = std::fs::read_to_string(&url_file).unwrap();
    assert!(!url.contains(":4222"), "4222 was held, yet: {url}");
    imsd.terminate();
    let mut imsd = imsd;
    assert!(imsd.wait().unwrap().success());
    assert!(!url_file.exists(), "the URL outlived its server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsctl_records_a_launch_and_lists_the_images_nobody_launched() {
    let service = Service::start().await;
    service.client.register(&["t1"]).await;
    let tenant = service.client.issue("tenant", Some("t1")).await;
    let operator = service.client.issue("operator", None).await;
    let launched = service
        .client
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let idle = service
        .client
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let url = service.nats.url();
    let as_ = |token: &str, rest: &[&str]| -> Vec<String> {
        [
            "--nats-url",
            url.as_str(),
            "--region",
            REGION,
            "--token",
            token,
        ]
        .iter()
        .chain(rest)
        .map(|arg| arg.to_string())
        .collect()
    };
    let (code, out, err) = imsctl(&as_(
        &operator,
        &["op", "record-launch", &launched, "--tenant", "t1"],
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("record-launch"), "{out}");
    // The next query of t1 may run before the projector applied the launch: ask until it has.
    let started = std::time::Instant::now();
    loop {
        let (code, out, err) = imsctl(&as_(
            &tenant,
            &["--tenant", "t1", "images", "unused", "--days", "30"],
        ));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&idle), "{out}");
        if !out.contains(&launched) {
            assert!(out.contains("last launched never"), "{out}");
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "the launch never showed: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, out, _) = imsctl(&as_(
        &tenant,
        &["--tenant", "t1", "images", "unused", "--days", "0"],
    ));
    assert_eq!(code, 1, "a refused query exits 1: {out}");
    assert!(out.contains("1 to 3650"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imsctl_deprecates_an_image_and_usable_prints_the_warning() {
    let service = Service::start().await;
    service.client.register(&["t1"]).await;
    let tenant = service.client.issue("tenant", Some("t1")).await;
    let old = service
        .client
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let new = service
        .client
        .active_image("t1", ims_tests::serde_json::json!({}))
        .await;
    let url = service.nats.url();
    let as_t1 = |rest: &[&str]| -> Vec<String> {
        [
            "--nats-url",
            url.as_str(),
            "--region",
            REGION,
            "--token",
            tenant.as_str(),
            "--tenant",
            "t1",
        ]
        .iter()
        .chain(rest)
        .map(|arg| arg.to_string())
        .collect()
    };
    let (code, out, _) = imsctl(&as_t1(&[
        "image",
        "deprecate",
        &old,
        "--obsolete-at",
        "2001-01-01T00:00:00Z",
    ]));
    assert_eq!(code, 1, "a refused command exits 1: {out}");
    assert!(out.contains("obsolete_at 2001-01-01"), "{out}");
    let (code, out, err) = imsctl(&as_t1(&["image", "deprecate", &old, "--replacement", &new]));
    assert_eq!(code, 0, "{out}{err}");
    // The query may run before the projector applied the deprecation: ask until it has.
    let started = std::time::Instant::now();
    loop {
        let (code, out, err) = imsctl(&as_t1(&["images", "usable", &old]));
        assert_eq!(code, 0, "{out}{err}");
        if out.contains("warning:") {
            assert!(out.starts_with("allowed:"), "{out}");
            assert!(out.contains(&format!("use its replacement {new}")), "{out}");
            break;
        }
        assert!(started.elapsed().as_secs() < 10, "no warning: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, out, _) = imsctl(&as_t1(&["images", "list", "--include-deprecated"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(deprecated)"), "{out}");
}
