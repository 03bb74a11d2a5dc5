//! `imsctl`: talks to a running ims over NATS. Every tenant command, every operator command, the
//! queries and the audit tools; human output by default, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the service refused the request (the error code is printed),
//! 2 bad usage, 3 the service could not be reached.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

/// Talk to the ims Image Management Service.
///
/// Examples:
///   imsctl --tenant acme image create --name web-2026 --disk system --from-ecs ecs-42 \
///          --os ubuntu/22.04/x86_64 --min-disk-gb 40 --tag env=prod
///   imsctl --tenant acme image share 0192f0c1-... partner-a partner-b
///   imsctl --tenant partner-a image accept 0192f0c1-...
///   imsctl op register-tenant acme --quota 200
///   imsctl --tenant acme --json images list --type shared
///   imsctl op credential issue tenant acme        # prints acme's token, once
///
/// Credentials: --token, else IMS_TOKEN, else --token-file, else ./data/operator.token (the
/// bootstrap operator token `imsd run` writes) when it exists.
#[derive(Parser, Debug)]
#[command(name = "imsctl", version, verbatim_doc_comment)]
pub struct Cli {
    /// NATS server of the service.
    #[arg(
        long,
        env = "IMS_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,
    /// Region to talk to.
    #[arg(long, env = "IMS_REGION", default_value = "local-1", global = true)]
    region: String,
    /// Tenant to act as (tenant commands and queries).
    #[arg(long, env = "IMS_TENANT", global = true)]
    tenant: Option<String>,
    /// First token of every NATS subject.
    #[arg(long, env = "IMS_SUBJECT_PREFIX", default_value = "ims", global = true)]
    subject_prefix: String,
    /// Print the service's JSON answer instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    /// The credential to connect with, ims_<key_id>_<secret>.
    #[arg(long, env = "IMS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the credential (one line).
    #[arg(long, global = true)]
    token_file: Option<std::path::PathBuf>,
    /// The service's HTTP API, for image files (import, download).
    #[arg(
        long,
        env = "IMS_HTTP_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    http_url: String,
    /// A command id (UUID) for exactly-once retries; generated when absent.
    #[arg(long, global = true, value_parser = parse_command_id)]
    command_id: Option<uuid::Uuid>,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// Tenant commands on images (needs --tenant).
    #[command(subcommand)]
    Image(ImageTop),
    /// Operator commands.
    #[command(subcommand)]
    Op(OpCommand),
    /// Queries of the read models (needs --tenant).
    #[command(subcommand)]
    Images(ImagesQuery),
    /// History, time travel, verification and export, online or offline (--data-dir).
    Audit(AuditArgs),
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// Work offline on this data dir (the service must be stopped) instead of over NATS.
    #[arg(long, global = true)]
    data_dir: Option<std::path::PathBuf>,
    /// Where the image files are, for `verify` offline: `local` (the data dir's) or
    /// `s3://bucket[/prefix]`, as given to imsd.
    #[arg(long, env = "IMS_STORE", default_value = "local", global = true)]
    store: ims_service::store::StoreLocation,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Moment {
    /// A time, RFC 3339, such as 2026-11-28T07:00:00Z.
    #[arg(long)]
    at: Option<String>,
    /// A log position.
    #[arg(long)]
    position: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    #[command(flatten)]
    Region(RegionAuditCommand),
    /// Who was granted which credential, by whom and when, and every revocation: the identity
    /// log, its hash chain checked (needs an auditor's credential online).
    Credentials,
}

/// Audits of one region's log.
#[derive(Subcommand, Debug)]
enum RegionAuditCommand {
    /// Every event about an image (--image) and/or a tenant (--tenant), in order.
    History {
        #[arg(long)]
        image: Option<String>,
    },
    /// Answer a query as it was at a past time or position (needs --tenant).
    AsOf {
        #[command(flatten)]
        moment: Moment,
        /// visible-images, shared-with-me, members or share-counts.
        #[arg(long, default_value = "visible-images", value_parser = ["visible-images", "shared-with-me", "members", "share-counts", "image", "usable"])]
        query: String,
        /// The image, for members.
        #[arg(long)]
        image: Option<String>,
    },
    /// The tenants that could use an image at a moment, and through what.
    WhoCouldUse {
        #[arg(long)]
        image: String,
        #[command(flatten)]
        moment: Moment,
    },
    /// Check positions, the hash chain from position 1, and every read model against a rebuild.
    Verify,
    /// Export events as JSON Lines (one event a line, hashes included; schema in ARCHITECTURE.md).
    Export {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position (default: the head).
        #[arg(long)]
        to: Option<u64>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImagesQuery {
    /// The images the tenant may use: public, its own, accepted shares, Marketplace.
    List {
        /// public, private, shared or marketplace.
        #[arg(long = "type")]
        image_type: Option<String>,
        /// queued, saving, active or killed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        /// key or key=value.
        #[arg(long)]
        tag: Option<String>,
        /// Part of the name, any case.
        #[arg(long)]
        name: Option<String>,
        /// Show deprecated public images too.
        #[arg(long)]
        include_deprecated: bool,
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Start after this image id (the next_marker of the previous page).
        #[arg(long)]
        marker: Option<String>,
    },
    /// Images shared with the tenant and its member status (pending, accepted, rejected).
    SharedWithMe {
        #[arg(long)]
        status: Option<String>,
    },
    /// One image.
    Show { image_id: String },
    /// The members of an image the tenant owns.
    Members { image_id: String },
    /// Per owned image: pending, accepted, rejected members and the limit.
    ShareCounts,
    /// May the tenant use this image for this purpose, and at what price?
    Usable {
        image_id: String,
        /// create_ecs, change_os or create_evs.
        #[arg(long, default_value = "create_ecs")]
        purpose: String,
    },
    /// Notifications: shares offered and revoked, shared images deleted, deprecations.
    Feed {
        /// Only items after this position.
        #[arg(long)]
        after: Option<u64>,
    },
    /// The tenant's Marketplace usage charges.
    Usage,
}

fn query_request(query: ImagesQuery) -> (&'static str, Value) {
    let mut body = Map::new();
    let mut set = |key: &str, value: Value| {
        if !value.is_null() {
            body.insert(key.to_owned(), value);
        }
    };
    let name = match query {
        ImagesQuery::List {
            image_type,
            status,
            platform,
            tag,
            name,
            include_deprecated,
            limit,
            marker,
        } => {
            set("type", json!(image_type));
            set("status", json!(status));
            set("platform", json!(platform));
            set("tag", json!(tag));
            set("name", json!(name));
            set("include_deprecated", json!(include_deprecated));
            set("limit", json!(limit));
            set("marker", json!(marker));
            "visible-images"
        }
        ImagesQuery::SharedWithMe { status } => {
            set("status", json!(status));
            "shared-with-me"
        }
        ImagesQuery::Show { image_id } => {
            set("image_id", json!(image_id));
            "image"
        }
        ImagesQuery::Members { image_id } => {
            set("image_id", json!(image_id));
            "members"
        }
        ImagesQuery::ShareCounts => "share-counts",
        ImagesQuery::Usable { image_id, purpose } => {
            set("image_id", json!(image_id));
            set("purpose", json!(purpose));
            "usable"
        }
        ImagesQuery::Feed { after } => {
            set("after", json!(after));
            "feed"
        }
        ImagesQuery::Usage => "usage",
    };
    (name, Value::Object(body))
}

/// A human rendering of a query answer.
fn render_query(name: &str, answer: &Value) -> String {
    if answer["ok"] == false {
        return summarize(name, answer);
    }
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let mut lines: Vec<String> = match name {
        "visible-images" | "shared-with-me" => items
            .iter()
            .map(|i| {
                format!(
                    "{}  {:<11} {:<8} {:<9} {}{}",
                    text(&i["id"]),
                    text(&i["type"]),
                    text(&i["status"]),
                    text(&i["disk"]),
                    text(&i["name"]),
                    i["member_status"]
                        .as_str()
                        .map(|s| format!("  [{s}]"))
                        .unwrap_or_default()
                )
            })
            .collect(),
        "members" => items
            .iter()
            .map(|i| format!("{:<32} {}", text(&i["tenant"]), text(&i["status"])))
            .collect(),
        "share-counts" => items
            .iter()
            .map(|i| {
                format!(
                    "{}  {}  pending {} accepted {} rejected {} ({} of {})",
                    text(&i["image_id"]),
                    text(&i["name"]),
                    i["pending"],
                    i["accepted"],
                    i["rejected"],
                    i["total"],
                    i["limit"]
                )
            })
            .collect(),
        "feed" => items
            .iter()
            .map(|i| {
                format!(
                    "#{} {} {:<22} {}",
                    i["position"],
                    text(&i["at"]),
                    text(&i["kind"]),
                    text(&i["message"])
                )
            })
            .collect(),
        "usable" => vec![format!(
            "{}: {}",
            if answer["allowed"] == true {
                "allowed"
            } else {
                "refused"
            },
            text(&answer["reason"])
        )],
        "usage" => {
            let mut lines: Vec<String> = items
                .iter()
                .map(|i| {
                    format!(
                        "#{} {} image {} {} h charge {} {}",
                        i["position"],
                        text(&i["at"]),
                        text(&i["image_id"]),
                        i["hours"],
                        i["charge_minor"],
                        text(&i["currency"])
                    )
                })
                .collect();
            lines.push(format!("totals (minor units): {}", answer["totals_minor"]));
            lines
        }
        _ => vec![serde_json::to_string_pretty(answer).unwrap_or_default()],
    };
    if let Some(marker) = answer["next_marker"].as_str() {
        lines.push(format!("more: --marker {marker}"));
    }
    if lines.is_empty() {
        lines.push("(none)".to_owned());
    }
    lines.join("\n")
}

#[derive(Args, Debug)]
struct ImageRef {
    /// The image id (a UUID).
    image_id: String,
    /// Refuse with `conflict` unless the image is at this version.
    #[arg(long)]
    expected_version: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum ImageTop {
    #[command(flatten)]
    Command(ImageCommand),
    /// Create an image and import its file: --file uploads it from this machine with a progress
    /// bar; --url has the service download it (http or https, ports 80 and 443, public
    /// addresses only) and waits until it is imported. The service hashes and inspects the
    /// bytes: a file that is not what --format says is refused, with why.
    ///
    /// Examples: `imsctl --tenant acme image import --file web.qcow2 --format qcow2 --name web
    /// --disk system --os ubuntu/24.04/x86_64 --min-disk-gb 10`;
    /// `imsctl --tenant acme image import --url https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    /// --format qcow2 --name noble --disk system --os ubuntu/24.04/x86_64 --min-disk-gb 10`
    Import(ImportArgs),
    /// Download an image's file (yours, or one shared with you and accepted).
    Download {
        image_id: String,
        /// Where to write it.
        #[arg(long)]
        output: std::path::PathBuf,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["file", "url"])))]
struct ImportArgs {
    /// The image file on this machine, uploaded over HTTP (--http-url).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// An http(s) URL the service downloads the image from.
    #[arg(long)]
    url: Option<String>,
    /// What the file is: qcow2, vmdk, vhd, vhdx, vdi, iso or raw.
    #[arg(long, value_parser = ["qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "raw"])]
    format: String,
    #[arg(long)]
    name: String,
    /// system or data.
    #[arg(long, value_parser = ["system", "data"])]
    disk: String,
    /// platform/version/arch, such as ubuntu/22.04/x86_64 (system images).
    #[arg(long, value_parser = parse_os)]
    os: Option<Value>,
    #[arg(long)]
    min_disk_gb: u32,
    /// repeat as --tag key=value.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Create a private image from an ECS or an image file.
    Create(CreateArgs),
    /// Change an image's name, description, tags, minimum disk or protection.
    Update {
        #[command(flatten)]
        image: ImageRef,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Replace all tags; repeat as --tag key=value.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long)]
        min_disk_gb: Option<u32>,
        #[arg(long)]
        protected: Option<bool>,
    },
    /// Delete an image; every share of it ends.
    Delete(ImageRef),
    /// Share an image with tenants of the same region.
    Share {
        #[command(flatten)]
        image: ImageRef,
        #[arg(required = true)]
        tenants: Vec<String>,
    },
    /// Stop sharing an image with some tenants, or with everyone (--all).
    Unshare {
        #[command(flatten)]
        image: ImageRef,
        tenants: Vec<String>,
        #[arg(long, conflicts_with = "tenants")]
        all: bool,
    },
    /// Accept an image shared with you.
    Accept(ImageRef),
    /// Reject an image shared with you.
    Reject(ImageRef),
    /// Copy an image to another region where you are a registered tenant.
    Copy {
        #[command(flatten)]
        image: ImageRef,
        /// The target region.
        #[arg(long = "to")]
        target_region: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List an image on the Marketplace.
    ListOnMarketplace {
        #[command(flatten)]
        image: ImageRef,
        #[arg(long)]
        publisher: String,
        /// `free`, or `per_hour:AMOUNT_MINOR:CURRENCY` such as per_hour:120:USD.
        #[arg(long, value_parser = parse_price)]
        price: Value,
    },
    /// Take an image off the Marketplace.
    Delist(ImageRef),
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[arg(long)]
    name: String,
    /// system, data or full_ecs.
    #[arg(long, value_parser = ["system", "data", "full_ecs"])]
    disk: String,
    /// Make the image from this ECS.
    #[arg(
        long,
        conflicts_with = "from_file",
        required_unless_present = "from_file"
    )]
    from_ecs: Option<String>,
    /// Data disks of the ECS to include (full-ECS images); repeatable.
    #[arg(long = "data-disk")]
    data_disks: Vec<String>,
    /// Import the image from this URL: file:///… under the service's import root, or
    /// http(s)://… (downloaded under the web-download rules).
    #[arg(long)]
    from_file: Option<String>,
    /// Format of the file: qcow2, vhd, vhdx, vmdk, raw, qed, vdi, iso, zvhd, zvhd2.
    #[arg(long, requires = "from_file")]
    format: Option<String>,
    /// platform/version/arch, such as ubuntu/22.04/x86_64 (system and full_ecs images).
    #[arg(long, value_parser = parse_os)]
    os: Option<Value>,
    #[arg(long)]
    min_disk_gb: u32,
    /// repeat as --tag key=value.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    description: String,
    #[arg(long)]
    protected: bool,
    /// Encrypt with this KMS key (encrypted images cannot be shared or copied).
    #[arg(long)]
    kms_key_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum OpCommand {
    #[command(flatten)]
    Catalog(CatalogOpCommand),
    /// Issue, revoke and list credentials (the identity log records each grant).
    #[command(subcommand)]
    Credential(CredentialCommand),
}

/// Operator commands of a region's catalog.
#[derive(Subcommand, Debug)]
enum CatalogOpCommand {
    /// Register a tenant in the region.
    RegisterTenant {
        tenant: String,
        #[arg(long)]
        quota: Option<u32>,
    },
    /// Set how many private images a tenant may own.
    SetQuota { tenant: String, quota: u32 },
    /// Publish a public image, active at once for every tenant.
    PublishPublicImage {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "system", value_parser = ["system", "data"])]
        disk: String,
        #[arg(long, value_parser = parse_os)]
        os: Option<Value>,
        #[arg(long)]
        min_disk_gb: u32,
        #[arg(long)]
        size_bytes: u64,
        #[arg(long)]
        checksum_sha256: String,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Hide a public image from lists (it stays usable); --undo shows it again.
    DeprecateImage {
        image_id: String,
        #[arg(long)]
        undo: bool,
    },
    /// Delete a public image.
    DeleteImage { image_id: String },
    /// Report a build: started, succeeded (with size and checksum) or failed.
    ReportBuild {
        image_id: String,
        #[arg(long, value_parser = ["started", "succeeded", "failed"])]
        outcome: String,
        #[arg(long)]
        size_bytes: Option<u64>,
        #[arg(long)]
        checksum_sha256: Option<String>,
    },
    /// Record hours of use of a Marketplace image by a tenant.
    RecordUsage {
        image_id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        hours: u32,
    },
}

#[derive(Subcommand, Debug)]
enum CredentialCommand {
    /// Issue a credential and print its token (shown this once; only its digest is kept).
    ///
    /// Examples: `imsctl op credential issue tenant acme`, `imsctl op credential issue auditor`.
    Issue {
        /// What the holder may do.
        #[arg(value_parser = ["tenant", "operator", "auditor"])]
        role: String,
        /// The tenant a `tenant` credential acts as.
        #[arg(required_if_eq("role", "tenant"))]
        for_tenant: Option<String>,
    },
    /// Revoke a credential: refused at its next connect, its connections closed.
    Revoke { key_id: String },
    /// List every credential, revoked ones included (never a secret).
    List,
}

fn parse_tag(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("tag {value:?} is not key=value"))
}

fn parse_os(value: &str) -> Result<Value, String> {
    let parts: Vec<&str> = value.split('/').collect();
    match parts.as_slice() {
        [platform, version, arch] => {
            Ok(json!({"platform": platform, "version": version, "arch": arch}))
        }
        _ => Err(format!(
            "os {value:?} is not platform/version/arch, such as ubuntu/22.04/x86_64"
        )),
    }
}

fn parse_price(value: &str) -> Result<Value, String> {
    if value == "free" {
        return Ok(json!({"model": "free"}));
    }
    match value.split(':').collect::<Vec<_>>().as_slice() {
        ["per_hour", amount, currency] => {
            let amount: u64 = amount
                .parse()
                .map_err(|_| format!("amount {amount:?} is not a whole number of minor units"))?;
            Ok(json!({"model": "per_hour", "amount_minor": amount, "currency": currency}))
        }
        _ => Err(format!(
            "price {value:?} is not `free` or `per_hour:AMOUNT_MINOR:CURRENCY`"
        )),
    }
}

fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn image_body(image: &ImageRef, extra: Value) -> Value {
    let mut body = json!({"image_id": image.image_id});
    if let Some(version) = image.expected_version {
        body["expected_version"] = json!(version);
    }
    merge(body, extra)
}

fn merge(mut body: Value, extra: Value) -> Value {
    if let (Some(target), Value::Object(extra)) = (body.as_object_mut(), extra) {
        target.extend(extra);
    }
    body
}

/// The subject's command name and JSON body of a tenant command.
fn tenant_request(command: ImageCommand) -> (&'static str, Value) {
    match command {
        ImageCommand::Create(args) => {
            let source = match (args.from_ecs, args.from_file) {
                (Some(instance_id), _) => {
                    json!({"ecs": {"instance_id": instance_id, "data_disk_ids": args.data_disks}})
                }
                (None, Some(url)) => {
                    json!({"file": {"url": url, "format": args.format.unwrap_or_else(|| "qcow2".into())}})
                }
                (None, None) => unreachable!("clap requires one source"),
            };
            let mut body = json!({"name": args.name, "disk": args.disk, "source": source, "min_disk_gb": args.min_disk_gb,
                "tags": tags_json(&args.tags), "description": args.description, "protected": args.protected});
            if let Some(os) = args.os {
                body["os"] = os;
            }
            if let Some(key) = args.kms_key_id {
                body["encryption"] = json!({"kms_key_id": key});
            }
            ("create-image", body)
        }
        ImageCommand::Update {
            image,
            name,
            description,
            tags,
            min_disk_gb,
            protected,
        } => {
            let mut extra = Map::new();
            if let Some(name) = name {
                extra.insert("name".into(), json!(name));
            }
            if let Some(description) = description {
                extra.insert("description".into(), json!(description));
            }
            if !tags.is_empty() {
                extra.insert("tags".into(), tags_json(&tags));
            }
            if let Some(min_disk_gb) = min_disk_gb {
                extra.insert("min_disk_gb".into(), json!(min_disk_gb));
            }
            if let Some(protected) = protected {
                extra.insert("protected".into(), json!(protected));
            }
            ("update-image", image_body(&image, Value::Object(extra)))
        }
        ImageCommand::Delete(image) => ("delete-image", image_body(&image, json!({}))),
        ImageCommand::Share { image, tenants } => (
            "share-image",
            image_body(&image, json!({"tenants": tenants})),
        ),
        ImageCommand::Unshare {
            image,
            tenants,
            all,
        } => {
            let extra = if all {
                json!({"all": true})
            } else {
                json!({"tenants": tenants})
            };
            ("unshare-image", image_body(&image, extra))
        }
        ImageCommand::Accept(image) => ("accept-share", image_body(&image, json!({}))),
        ImageCommand::Reject(image) => ("reject-share", image_body(&image, json!({}))),
        ImageCommand::Copy {
            image,
            target_region,
            name,
        } => {
            let mut extra = json!({"target_region": target_region});
            if let Some(name) = name {
                extra["name"] = json!(name);
            }
            ("copy-image", image_body(&image, extra))
        }
        ImageCommand::ListOnMarketplace {
            image,
            publisher,
            price,
        } => (
            "list-on-marketplace",
            image_body(&image, json!({"publisher": publisher, "price": price})),
        ),
        ImageCommand::Delist(image) => ("delist-from-marketplace", image_body(&image, json!({}))),
    }
}

fn operator_request(command: CatalogOpCommand) -> (&'static str, Value) {
    match command {
        CatalogOpCommand::RegisterTenant { tenant, quota } => {
            let mut body = json!({"tenant": tenant});
            if let Some(quota) = quota {
                body["quota"] = json!(quota);
            }
            ("register-tenant", body)
        }
        CatalogOpCommand::SetQuota { tenant, quota } => {
            ("set-quota", json!({"tenant": tenant, "quota": quota}))
        }
        CatalogOpCommand::PublishPublicImage {
            name,
            disk,
            os,
            min_disk_gb,
            size_bytes,
            checksum_sha256,
            tags,
            description,
        } => {
            let mut body = json!({"name": name, "disk": disk, "min_disk_gb": min_disk_gb, "size_bytes": size_bytes,
                "checksum_sha256": checksum_sha256, "tags": tags_json(&tags), "description": description});
            if let Some(os) = os {
                body["os"] = os;
            }
            ("publish-public-image", body)
        }
        CatalogOpCommand::DeprecateImage { image_id, undo } => (
            "deprecate-image",
            json!({"image_id": image_id, "deprecated": !undo}),
        ),
        CatalogOpCommand::DeleteImage { image_id } => {
            ("delete-image", json!({"image_id": image_id}))
        }
        CatalogOpCommand::ReportBuild {
            image_id,
            outcome,
            size_bytes,
            checksum_sha256,
        } => {
            let mut body = json!({"image_id": image_id, "outcome": outcome});
            if let Some(size) = size_bytes {
                body["size_bytes"] = json!(size);
            }
            if let Some(checksum) = checksum_sha256 {
                body["checksum_sha256"] = json!(checksum);
            }
            ("report-build", body)
        }
        CatalogOpCommand::RecordUsage {
            image_id,
            tenant,
            hours,
        } => (
            "record-usage",
            json!({"image_id": image_id, "tenant": tenant, "hours": hours}),
        ),
    }
}

/// How long imsctl waits for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where imsctl looks for a credential when none is given.
const DEFAULT_TOKEN_FILE: &str = "./data/operator.token";

/// The credential to connect with: --token / IMS_TOKEN, --token-file, or ./data/operator.token.
fn resolve_token(
    token: Option<String>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = token {
        return Ok(Some(token.trim().to_owned()));
    }
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|e| {
                anyhow::Error::new(Usage(format!(
                    "reading the token file {}: {e}",
                    path.display()
                )))
            })
    };
    if let Some(path) = token_file {
        return read(path).map(Some);
    }
    let default = std::path::Path::new(DEFAULT_TOKEN_FILE);
    if default.exists() {
        return read(default).map(Some);
    }
    Ok(None)
}

/// A connection, and the permission errors the server sends on it (a publish the credential
/// may not make is otherwise silent: the request would just time out).
async fn connect_watched(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    let (violations, watched) = tokio::sync::mpsc::unbounded_channel();
    let client = connect_with(nats_url, token, name, move |options| {
        options.event_callback(move |event| {
            let violations = violations.clone();
            async move {
                let text = event.to_string();
                if text.to_lowercase().contains("permissions violation") {
                    let _ = violations.send(text);
                }
            }
        })
    })
    .await?;
    Ok((client, watched))
}

async fn connect(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    connect_with(nats_url, token, name, |options| options).await
}

async fn connect_with(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
    configure: impl FnOnce(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let auth = match token {
        Some(token) => ims_service::bus::BusAuth::Token(token.to_owned()),
        None => ims_service::bus::BusAuth::None,
    };
    configure(auth.apply(async_nats::ConnectOptions::new()))
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_url)
        .await
        .with_context(|| {
            let hint = if token.is_some() {
                "is imsd running, and is the credential live? (see imsd's log for the URL)"
            } else {
                "no credential was given: pass --token, set IMS_TOKEN, or use --token-file \
                 (imsd run writes the operator's to ./data/operator.token)"
            };
            format!("cannot connect to NATS at {nats_url}; {hint}")
        })
}

async fn request(
    nats_url: &str,
    token: Option<&str>,
    subject: String,
    body: &Value,
) -> anyhow::Result<Value> {
    let (client, mut violations) = connect_watched(nats_url, token, "imsctl").await?;
    let payload = Bytes::from(serde_json::to_vec(body)?);
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        tokio::select! {
            answer = client.request(subject.clone(), payload) => Ok(answer),
            Some(violation) = violations.recv() => Err(violation),
        }
    });
    let message = answered
        .await
        .with_context(|| format!("no answer on {subject} within {REQUEST_TIMEOUT:?}"))?
        .map_err(|violation| {
            anyhow::anyhow!(
                "this credential may not send on {subject} ({violation}); a tenant's commands \
                 and queries need that tenant's credential (imsctl op credential issue tenant \
                 ID), operator commands an operator's"
            )
        })?
        .with_context(|| {
            format!("no service answers on {subject}; is imsd running for this region?")
        })?;
    serde_json::from_slice(&message.payload)
        .with_context(|| format!("the answer on {subject} is not JSON"))
}

fn summarize(name: &str, reply: &Value) -> String {
    if reply["ok"] != true {
        return format!(
            "error [{}]: {}",
            reply["error"]["code"].as_str().unwrap_or("?"),
            reply["error"]["message"].as_str().unwrap_or("")
        );
    }
    let mut line = format!("ok: {name}");
    for (key, label) in [
        ("image_id", "image"),
        ("tenant", "tenant"),
        ("copy_image_id", "copy"),
        ("version", "version"),
        ("position", "position"),
    ] {
        match &reply[key] {
            Value::Null => {}
            Value::String(s) => line.push_str(&format!(" {label} {s}")),
            other => line.push_str(&format!(" {label} {other}")),
        }
    }
    for (key, label) in [
        ("already_members", "already members"),
        ("not_members", "not members"),
    ] {
        if let Some(list) = reply[key].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("; {label}: {}", names.join(", ")));
        }
    }
    if reply["replayed"] == true {
        line.push_str(" (replayed: this command id was seen before)");
    }
    line
}

fn parse_command_id(value: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(value).map_err(|_| {
        format!(
            "{value:?} is not a UUID; give one such as 01890a5d-ac96-774b-bcce-b302099a8057 (the \
             same id again makes a retry), or leave --command-id out to have one generated"
        )
    })
}

/// A mistake in how imsctl was called (a missing or malformed option, a data dir without the
/// log): exit code 2, like clap's own usage errors, not 3 (the service could not be reached).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns early with a [`Usage`] error.
macro_rules! usage {
    ($($message:tt)*) => {
        return Err(anyhow::Error::new(Usage(format!($($message)*))))
    };
}

/// The whole `imsctl` program.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsctl: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(3);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("imsctl: {error:#}");
            if error.is::<Usage>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::from(3)
            }
        }
    }
}

fn tenant_of(tenant: Option<&str>) -> anyhow::Result<&str> {
    match tenant {
        Some(tenant) => Ok(tenant),
        None => usage!("this command acts as a tenant: pass --tenant ID (or set IMS_TENANT)"),
    }
}

async fn execute(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let prefix = format!("{}.v1.{}", cli.subject_prefix, cli.region);
    let command_id = cli.command_id.unwrap_or_else(uuid::Uuid::now_v7);
    let tenant = cli.tenant.clone();
    let token = resolve_token(cli.token.clone(), cli.token_file.as_deref())?;
    let token = token.as_deref();
    let (subject, name, body) = match cli.command {
        Top::Op(OpCommand::Credential(command)) => {
            return credential(command, &cli.nats_url, token, &cli.subject_prefix, cli.json).await;
        }
        Top::Image(ImageTop::Import(args)) => {
            let tenant = tenant_of(tenant.as_deref())?.to_owned();
            return image_import(
                &cli.nats_url,
                &cli.http_url,
                token,
                &prefix,
                &tenant,
                command_id,
                args,
                cli.json,
            )
            .await;
        }
        Top::Image(ImageTop::Download { image_id, output }) => {
            let tenant = tenant_of(tenant.as_deref())?.to_owned();
            let path = format!("/v1/{}/tenants/{tenant}/images/{image_id}/file", cli.region);
            let (status, refused) =
                crate::files::download(&cli.http_url, &path, token, &output, cli.json).await?;
            if status == 200 {
                println!("downloaded image {image_id} to {}", output.display());
                return Ok(std::process::ExitCode::SUCCESS);
            }
            println!(
                "error [{status}]: {}",
                refused.map_or(String::new(), |r| r["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            );
            return Ok(std::process::ExitCode::from(1));
        }
        Top::Image(ImageTop::Command(command)) => {
            let (name, body) = tenant_request(command);
            (
                format!("{prefix}.cmd.{}.{name}", tenant_of(tenant.as_deref())?),
                name,
                body,
            )
        }
        Top::Op(OpCommand::Catalog(command)) => {
            let (name, body) = operator_request(command);
            (format!("{prefix}.op.{name}"), name, body)
        }
        Top::Audit(args) => {
            return audit(
                args,
                &cli.nats_url,
                token,
                &cli.region,
                &cli.subject_prefix,
                tenant.as_deref(),
                cli.json,
            )
            .await;
        }
        Top::Images(query) => {
            let (name, body) = query_request(query);
            let subject = format!("{prefix}.q.{}.{name}", tenant_of(tenant.as_deref())?);
            let answer = request(&cli.nats_url, token, subject, &body).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", render_query(name, &answer));
            }
            let failed = answer["ok"] == false;
            return Ok(if failed {
                std::process::ExitCode::from(1)
            } else {
                std::process::ExitCode::SUCCESS
            });
        }
    };
    let body = merge(body, json!({"command_id": command_id.to_string()}));
    let reply = request(&cli.nats_url, token, subject, &body).await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        println!("{}", summarize(name, &reply));
    }
    Ok(if reply["ok"] == true {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// `imsctl image import`: creates an image with an upload source, waits until the read side has
/// it, and uploads the file over HTTP.
#[allow(clippy::too_many_arguments)]
async fn image_import(
    nats_url: &str,
    http_url: &str,
    token: Option<&str>,
    prefix: &str,
    tenant: &str,
    command_id: uuid::Uuid,
    args: ImportArgs,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let source = match &args.url {
        Some(url) => json!({"file": {"url": url, "format": args.format}}),
        None => json!({"upload": {"format": args.format}}),
    };
    let mut body = json!({"command_id": command_id.to_string(), "name": args.name, "disk": args.disk,
        "min_disk_gb": args.min_disk_gb, "tags": tags_json(&args.tags), "description": args.description,
        "source": source});
    if let Some(os) = args.os {
        body["os"] = os;
    }
    let created = request(
        nats_url,
        token,
        format!("{prefix}.cmd.{tenant}.create-image"),
        &body,
    )
    .await?;
    if created["ok"] != true {
        println!("{}", summarize("create-image", &created));
        return Ok(std::process::ExitCode::from(1));
    }
    let id = created["image_id"].as_str().unwrap_or_default().to_owned();
    // Read your write: the upload checks the image on the read side.
    let seen = json!({"image_id": id, "min_position": created["position"]});
    let view = request(nats_url, token, format!("{prefix}.q.{tenant}.image"), &seen).await?;
    let (Some(file), None) = (&args.file, &args.url) else {
        return imported_from_url(nats_url, token, prefix, tenant, view, json).await;
    };
    let region = prefix.rsplit('.').next().unwrap_or_default();
    let path = format!("/v1/{region}/tenants/{tenant}/images/{id}/file");
    let (status, answer) = crate::files::upload(http_url, &path, token, file, json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if status == 200 {
        println!("ok: imported {} as image {id}", file.display());
    } else {
        println!(
            "error [{}]: {} (image {id} is recorded as failed)",
            answer["error"]["code"].as_str().unwrap_or("?"),
            answer["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(if status == 200 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// Waits, with a spinner, until the service's import worker has imported the image `view`
/// describes (active) or refused it (killed, with the reason).
async fn imported_from_url(
    nats_url: &str,
    token: Option<&str>,
    prefix: &str,
    tenant: &str,
    mut view: Value,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let id = view["id"].as_str().unwrap_or_default().to_owned();
    let spinner = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    spinner.set_message(format!("the service is importing image {id}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    while view["status"] == "queued" || view["status"] == "saving" {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        view = request(
            nats_url,
            token,
            format!("{prefix}.q.{tenant}.image"),
            &json!({"image_id": id}),
        )
        .await?;
    }
    spinner.finish_and_clear();
    let active = view["status"] == "active";
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else if active {
        println!(
            "ok: imported image {id}: {} bytes, {}, sha256 {}",
            view["size_bytes"],
            view["detected_format"].as_str().unwrap_or("?"),
            view["checksum_sha256"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "error: image {id} is {}: {}",
            view["status"],
            view["failure_reason"]
                .as_str()
                .unwrap_or("no reason recorded")
        );
    }
    Ok(if active {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// `imsctl op credential …`: the identity subjects `ims.v1.iam.*`.
async fn credential(
    command: CredentialCommand,
    nats_url: &str,
    token: Option<&str>,
    prefix: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use ims_wire::iam::{IamReply, IssueCredential, RevokeCredential};
    let subjects = ims_wire::Subjects::new(prefix);
    let (subject, body) = match &command {
        CredentialCommand::Issue { role, for_tenant } => (
            subjects.iam("issue-credential"),
            serde_json::to_value(IssueCredential {
                role: role.clone(),
                tenant: for_tenant.clone(),
            })?,
        ),
        CredentialCommand::Revoke { key_id } => (
            subjects.iam("revoke-credential"),
            serde_json::to_value(RevokeCredential {
                key_id: key_id.clone(),
            })?,
        ),
        CredentialCommand::List => (subjects.iam("list-credentials"), json!({})),
    };
    let answer = request(nats_url, token, subject, &body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    let reply: IamReply =
        serde_json::from_value(answer).context("the identity service's answer")?;
    if let Some(error) = &reply.error {
        if !json {
            println!("error [{}]: {}", error.code.as_str(), error.message);
        }
        return Ok(std::process::ExitCode::from(1));
    }
    if json {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    match command {
        CredentialCommand::Issue { .. } => {
            let view = reply
                .credential
                .context("an issue reply without its credential")?;
            println!(
                "issued {} credential {} (identity log position {}); the token, shown only now:\n{}",
                view.tenant.map_or(view.role.clone(), |t| format!("{} {t}", view.role)),
                view.key_id,
                reply.position.unwrap_or_default(),
                reply.token.unwrap_or_default()
            );
        }
        CredentialCommand::Revoke { key_id } => println!(
            "revoked {key_id} (identity log position {}); its connections are being closed",
            reply.position.unwrap_or_default()
        ),
        CredentialCommand::List => {
            let mut table = String::from("KEY ID            ROLE      TENANT        ISSUED BY                  ISSUED AT             REVOKED AT\n");
            for c in &reply.credentials {
                table.push_str(&format!(
                    "{:<17} {:<9} {:<13} {:<26} {:<21} {}\n",
                    c.key_id,
                    c.role,
                    c.tenant.as_deref().unwrap_or("-"),
                    c.issued_by,
                    c.issued_at,
                    c.revoked_at.as_deref().unwrap_or("-")
                ));
            }
            print!("{table}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `imsctl audit credentials`: the identity log, line by line, with its chain checked.
async fn audit_credentials(
    source: &ims_service::audit::LogSource,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use ims_identity::directory::{decode_iam_event, IamEvent};
    let mut rows = Vec::new();
    let mut previous = [0u8; 32];
    loop {
        let batch = source.batch(rows.len() as u64 + 1, 1000).await?;
        if batch.envelopes.is_empty() {
            break;
        }
        for envelope in batch.envelopes {
            let position = envelope.position();
            anyhow::ensure!(
                envelope.hash_is_valid() && envelope.prev_hash == previous,
                "the identity log's hash chain is broken at position {position}"
            );
            previous = envelope.hash;
            let at = ims_wire::time::rfc3339(envelope.body.recorded_at_ms);
            let row = match decode_iam_event(&envelope)? {
                IamEvent::CredentialIssued {
                    key_id,
                    role,
                    issued_by,
                    ..
                } => json!({"position": position, "at": at, "type": "credential_issued",
                            "key_id": key_id, "role": role.name(),
                            "tenant": role.tenant().map(|t| t.to_string()), "by": issued_by}),
                IamEvent::CredentialRevoked { key_id, revoked_by } => {
                    json!({"position": position, "at": at, "type": "credential_revoked",
                           "key_id": key_id, "by": revoked_by})
                }
            };
            rows.push(row);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({"items": rows}))?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for row in &rows {
        let whom = match row["tenant"].as_str() {
            Some(tenant) => format!("tenant {tenant}"),
            None => row["role"].as_str().unwrap_or("").to_owned(),
        };
        let what = match row["type"].as_str() {
            Some("credential_issued") => format!(
                "issued {whom} credential {}",
                row["key_id"].as_str().unwrap_or("")
            ),
            _ => format!(
                "revoked credential {}",
                row["key_id"].as_str().unwrap_or("")
            ),
        };
        println!(
            "#{} {} by {}: {what}",
            row["position"],
            row["at"].as_str().unwrap_or(""),
            row["by"].as_str().unwrap_or("")
        );
    }
    println!("chain: ok, {} events", rows.len());
    Ok(std::process::ExitCode::SUCCESS)
}

fn progress_bar(total: u64, json: bool, what: &str) -> indicatif::ProgressBar {
    if json || total < 10_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

fn moment(moment: &Moment) -> anyhow::Result<ims_service::audit::Until> {
    use ims_service::audit::Until;
    match (&moment.at, moment.position) {
        (Some(at), _) => Ok(Until::Time(
            ims_wire::time::parse_rfc3339(at).map_err(anyhow::Error::msg)?,
        )),
        (None, Some(position)) => Ok(Until::Position(position)),
        (None, None) => usage!("give --at TIME or --position N"),
    }
}

async fn audit(
    args: AuditArgs,
    nats_url: &str,
    token: Option<&str>,
    region: &str,
    prefix: &str,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use ims_service::audit::{self as audit, LiveModels, LogSource};
    let region = ims_domain::RegionId::parse(region)
        .map_err(|e| Usage(format!("--region: {}", e.message)))?;
    let subjects = ims_wire::Subjects::new(prefix);
    let command = match args.command {
        AuditCommand::Region(command) => command,
        AuditCommand::Credentials => {
            let source = match &args.data_dir {
                Some(dir) => LogSource::Offline(
                    ims_identity::Directory::open(dir)
                        .with_context(|| {
                            format!("opening the identity log under {}", dir.display())
                        })?
                        .log()
                        .clone(),
                ),
                None => LogSource::online_identity(
                    connect(nats_url, token, "imsctl-audit").await?,
                    &subjects,
                ),
            };
            return audit_credentials(&source, json).await;
        }
    };
    let source = match &args.data_dir {
        Some(dir) => {
            let path = ims_service::runtime::log_path(dir, &region);
            // Opening a missing log would create an empty one, which verifies: an auditor who
            // mistyped the path must hear so, never "every hash valid".
            if !path.is_dir() {
                let found: Vec<String> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|entry| entry.path().join("log").is_dir())
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    // The identity log has its own audit (`audit credentials`).
                    .filter(|name| name != "iam")
                    .collect();
                usage!(
                    "there is no log of region {region} at {}; check --data-dir and --region \
                     (regions with a log there: {})",
                    path.display(),
                    if found.is_empty() {
                        "none".to_owned()
                    } else {
                        found.join(", ")
                    }
                );
            }
            let log = ims_log::EventLog::open(&path, region.as_str()).with_context(|| {
                format!(
                    "opening the log at {} (is imsd still running on it?)",
                    path.display()
                )
            })?;
            LogSource::Offline(log)
        }
        None => {
            let client = connect(nats_url, token, "imsctl-audit").await?;
            LogSource::online(client, &subjects, &region)
        }
    };
    let tenant = tenant
        .map(ims_domain::TenantId::parse)
        .transpose()
        .map_err(|e| Usage(format!("--tenant: {}", e.message)))?;
    let parse_image = |id: &str| ims_domain::ImageId::parse(id).map_err(|e| Usage(e.message));
    let head = source.head().await?;
    let print = |value: &Value, human: String| {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{human}");
        }
    };
    match command {
        RegionAuditCommand::History { image } => {
            let image = image.as_deref().map(parse_image).transpose()?;
            if image.is_none() && tenant.is_none() {
                usage!("give --image ID and/or --tenant T");
            }
            let bar = progress_bar(head, json, "reading history");
            let items =
                audit::history(&source, image, tenant.as_ref(), |p| bar.set_position(p)).await?;
            bar.finish_and_clear();
            let human = items
                .iter()
                .map(|i| {
                    format!(
                        "#{} {} {} cmd {} {}",
                        i["position"],
                        i["recorded_at"].as_str().unwrap_or(""),
                        i["actor"].as_str().unwrap_or(""),
                        i["command_id"].as_str().unwrap_or("-"),
                        i["summary"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(
                &json!({"items": items}),
                if human.is_empty() {
                    "(no events)".into()
                } else {
                    human
                },
            );
        }
        RegionAuditCommand::AsOf {
            moment: at,
            query,
            image,
        } => {
            let Some(tenant) = tenant else {
                usage!("audit as-of answers for a tenant: pass --tenant T");
            };
            let bar = progress_bar(head, json, "replaying");
            let replayed =
                audit::replay(&source, &region, moment(&at)?, |p| bar.set_position(p)).await?;
            bar.finish_and_clear();
            let params = ims_projection::queries::QueryParams {
                image_id: image,
                limit: Some(1000),
                include_deprecated: Some(true),
                ..Default::default()
            };
            let answer = replayed.query(&tenant, &query, &params)?;
            print(
                &answer,
                format!(
                    "as of position {}:\n{}",
                    replayed.position,
                    render_query(&query, &answer)
                ),
            );
        }
        RegionAuditCommand::WhoCouldUse { image, moment: at } => {
            let image = parse_image(&image)?;
            let bar = progress_bar(head, json, "replaying");
            let replayed =
                audit::replay(&source, &region, moment(&at)?, |p| bar.set_position(p)).await?;
            bar.finish_and_clear();
            let answer = replayed.who_could_use(image);
            let lines: Vec<String> = answer["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{:<32} {}",
                        t["tenant"].as_str().unwrap_or(""),
                        t["through"].as_str().unwrap_or("")
                    )
                })
                .collect();
            print(
                &answer,
                format!(
                    "image {image} as of position {}:\n{}",
                    replayed.position,
                    if lines.is_empty() {
                        "(no tenant)".to_owned()
                    } else {
                        lines.join("\n")
                    }
                ),
            );
        }
        RegionAuditCommand::Verify => {
            let bar = progress_bar(head, json, "verifying the chain");
            let chain = audit::verify_chain(&source, |p| bar.set_position(p)).await?;
            bar.finish_and_clear();
            let projections = args
                .data_dir
                .as_ref()
                .map(|dir| ims_service::projector::projections_path(dir, &region));
            let live = match (&projections, &source) {
                (Some(dir), _) => LiveModels::Offline(dir),
                (None, LogSource::Online { client, .. }) => LiveModels::Online {
                    client,
                    subjects: &subjects,
                    region: &region,
                },
                (None, LogSource::Offline(_)) => unreachable!("offline has a data dir"),
            };
            let models = match (&chain, &projections) {
                (Ok(_), Some(dir)) if !dir.exists() => Vec::new(),
                (Ok(_), _) => audit::verify_models(&source, &region, live).await?,
                (Err(_), _) => Vec::new(),
            };
            // Imported files are checked where they are: offline, in the data dir's store.
            let objects = match (&chain, &args.data_dir) {
                (Ok(_), Some(dir)) => {
                    let store = ims_service::store::ImageStore::open(&args.store, dir, &region)
                        .with_context(|| format!("opening the image store of region {region}"))?;
                    Some(audit::verify_objects(&source, &region, &store).await?)
                }
                _ => None,
            };
            let ok = chain.is_ok()
                && models.iter().all(|(_, difference)| difference.is_none())
                && objects.as_ref().is_none_or(Vec::is_empty);
            let value = json!({
                "ok": ok,
                "head": head,
                "objects": objects.as_ref().map(|problems| json!({"ok": problems.is_empty(), "problems": problems})),
                "chain": match &chain { Ok(_) => json!({"ok": true}), Err((position, problem)) => json!({"ok": false, "first_bad_position": position, "problem": problem}) },
                "models": models.iter().map(|(name, difference)| json!({"model": name, "equal_to_rebuild": difference.is_none(), "first_difference": difference})).collect::<Vec<_>>(),
            });
            let mut human = vec![match &chain {
                Ok(head) => format!("chain: ok, positions 1..={head} contiguous, every hash valid"),
                Err((position, problem)) => {
                    format!("chain: BROKEN at position {position}: {problem}")
                }
            }];
            for (name, difference) in &models {
                human.push(match difference {
                    None => format!("read model {name}: equal to a rebuild from position 1"),
                    Some(difference) => {
                        format!("read model {name}: DIFFERS from a rebuild: {difference}")
                    }
                });
            }
            human.push(match &objects {
                None => "image files: checked offline only (--data-dir)".to_owned(),
                Some(problems) if problems.is_empty() => {
                    "image files: every active imported image's file has its recorded size and SHA-256".to_owned()
                }
                Some(problems) => format!("image files: {} PROBLEMS\n  {}", problems.len(), problems.join("\n  ")),
            });
            print(&value, human.join("\n"));
            return Ok(if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            });
        }
        RegionAuditCommand::Export { from, to, output } => {
            use std::io::Write as _;
            let to = to.unwrap_or(head).min(head);
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let bar = progress_bar(
                to.saturating_sub(from) + 1,
                output.is_none() || json,
                "exporting",
            );
            source
                .scan(from, to, |batch| {
                    for envelope in batch {
                        serde_json::to_writer(&mut out, &audit::event_json(envelope))?;
                        out.write_all(b"\n")?;
                    }
                    bar.inc(batch.len() as u64);
                    Ok(true)
                })
                .await?;
            out.flush()?;
            bar.finish_and_clear();
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
